"""`membench replay --cluster` on a two-node Ray cluster on this machine, next to two independent local replays run
at the same time, against one memcached on loopback (-t 2).

The profile is replay_rate.py's (50 connections, 1 set : 10 gets, 100-byte values). Each local replay plays it
whole; the cluster's two actors share its connections, so `--loop 2` gives each actor the work of one local run.
The Ray cluster is up through every round, so the local replays and the cluster's share the machine with the same
idle Ray processes (what a load machine in a Ray cluster carries either way), and rounds alternate (local pair,
then cluster) so that drift on the 2-core machine reaches both alike. Prints each round's ops/s and ratio
(target >= 0.9), the median and the lowest ratio, the actors' start skew (target < 5 ms), the CPU the idle Ray
processes took during the local rounds, and for comparison one local pair measured before Ray started. That the
merged histograms give the percentiles of all values together is tests/replay/test_percentiles.py's to show.

    python bench/replay_cluster.py [--ops 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from local_memcached import start_memcached
from local_ray import ray_nodes
from replay_rate import profile_table

from membench.profile.metadata import ProfileMetadata
from membench.profile.writer import ProfileWriter


def replay(profile: Path, port: int, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A replay writing its result to `out` and its table (or error) beside it."""
    with out.with_suffix(".log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "membench", "replay", str(profile), "--target",
                                 f"127.0.0.1:{port}", "--no-progress", "--no-warm", "--json", str(out), *extra],
                                stdout=log, stderr=subprocess.STDOUT)


def finished(proc: subprocess.Popen[bytes], out: Path) -> dict:
    if proc.wait(timeout=600) != 0:
        raise SystemExit(f"a replay failed (exit {proc.returncode}): {out.with_suffix('.log').read_text()[-2000:]}")
    return json.loads(out.read_text())


def tree_cpu_s(roots: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each live process descended from `roots`, roots included."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    found, stack = {}, list(roots)
    while stack:
        pid = stack.pop()
        found[pid] = times.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return found


def used_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two tree_cpu_s readings by the processes alive at the second (a process that ended
    meanwhile is left out: its time would only show in its parent's once waited for, whenever that is)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def local_round(profile: Path, port: int, directory: Path) -> float:
    runs = [replay(profile, port, directory / f"local{n}.json") for n in range(2)]
    return sum(finished(run, directory / f"local{n}.json")["ops_per_s"] for n, run in enumerate(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=200_000, help="operations in the replayed profile")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of (two local replays, one cluster replay)")
    args = parser.parse_args()
    server, port = start_memcached(None, "-c", "4096")
    rounds: list[tuple[float, float, float]] = []  # local pair ops/s, cluster ops/s, start skew ms
    without_ray = 0.0
    idle_ray_cpu = 0.0
    local_s = 0.0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            profile = directory / "bench.profile"
            with ProfileWriter(profile, ProfileMetadata(source="bench:replay_cluster")) as writer:
                writer.write_batch(profile_table(args.ops))
            finished(replay(profile, port, directory / "warm.json"), directory / "warm.json")  # preload keys
            without_ray = local_round(profile, port, directory)
            with ray_nodes(nodes=2, cpus=1) as (address, ray_pids, _):
                for _ in range(args.rounds):
                    cpu_before, began = tree_cpu_s(ray_pids), time.monotonic()
                    local = local_round(profile, port, directory)
                    idle_ray_cpu += used_between(cpu_before, tree_cpu_s(ray_pids))
                    local_s += time.monotonic() - began
                    cluster = finished(replay(profile, port, directory / "cluster.json", "--cluster", address,
                                              "--loop", "2"), directory / "cluster.json")
                    rounds.append((local, cluster["ops_per_s"], cluster["cluster"]["start_skew_ms"]))
    finally:
        server.terminate()
        server.wait()
    print(f"memcached -t 2 on loopback, {args.ops:,}-operation profile (50 connections, 1:10 set:get); "
          "--cluster on 2 Ray nodes x 1 CPU")
    print(f"{'round':>5} {'two local replays':>18} {'--cluster':>10} {'ratio':>7} {'start skew':>11}")
    for number, (local, cluster, skew) in enumerate(rounds, 1):
        print(f"{number:>5} {local:>18,.0f} {cluster:>10,.0f} {cluster / local:>6.2f}x {skew:>8.2f} ms")
    ratios = [cluster / local for local, cluster, _ in rounds]
    print(f"ratio: median {statistics.median(ratios):.2f}x, lowest {min(ratios):.2f}x (target >= 0.9); start skew "
          f"at most {max(skew for _, _, skew in rounds):.2f} ms (target < 5); the idle Ray processes took "
          f"{idle_ray_cpu / local_s:.1%} of a CPU during the local rounds")
    cluster_median = statistics.median(cluster for _, cluster, _ in rounds)
    print(f"two local replays before Ray started: {without_ray:,.0f} ops/s; the median --cluster round is "
          f"{cluster_median / without_ray:.2f}x that")


if __name__ == "__main__":
    main()
