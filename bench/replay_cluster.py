"""`membench replay --cluster` on a two-node Ray cluster on this machine, next to two independent local replays run
at the same time, against one memcached on loopback (-t 2).

The profile is replay_rate.py's (50 connections, 1 set : 10 gets, 100-byte values). Each local replay plays it
whole; the cluster's two actors share its connections, so `--loop 2` gives each actor the work of one local run.
Prints ops/s of both and their ratio (target >= 0.9) and the actors' start skew (target < 5 ms); that the merged
histograms give the percentiles of all values together is tests/replay/test_percentiles.py's to show.

    python bench/replay_cluster.py [--ops 200000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from local_memcached import start_memcached
from local_ray import ray_nodes
from replay_rate import profile_table

from membench.profile.metadata import ProfileMetadata
from membench.profile.writer import ProfileWriter


def replay(profile: Path, port: int, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "membench", "replay", str(profile), "--target",
                             f"127.0.0.1:{port}", "--no-progress", "--no-warm", "--json", str(out), *extra],
                            stdout=subprocess.DEVNULL)


def finished(proc: subprocess.Popen[bytes], out: Path) -> dict:
    if proc.wait(timeout=600) != 0:
        raise SystemExit(f"a replay failed (exit {proc.returncode})")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=200_000, help="operations in the replayed profile")
    args = parser.parse_args()
    server, port = start_memcached(None, "-c", "4096")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            profile = directory / "bench.profile"
            with ProfileWriter(profile, ProfileMetadata(source="bench:replay_cluster")) as writer:
                writer.write_batch(profile_table(args.ops))
            finished(replay(profile, port, directory / "warm.json"), directory / "warm.json")  # preload keys
            runs = [replay(profile, port, directory / f"local{n}.json") for n in range(2)]
            local = [finished(run, directory / f"local{n}.json") for n, run in enumerate(runs)]
            with ray_nodes(nodes=2, cpus=1) as address:
                cluster = finished(replay(profile, port, directory / "cluster.json", "--cluster", address,
                                          "--loop", "2"), directory / "cluster.json")
    finally:
        server.terminate()
        server.wait()
    local_rate = sum(run["ops_per_s"] for run in local)
    print(f"memcached -t 2 on loopback, {args.ops:,}-operation profile (50 connections, 1:10 set:get)")
    print(f"two local replays at once:  {local[0]['ops_per_s']:>10,.0f} + {local[1]['ops_per_s']:,.0f} = "
          f"{local_rate:,.0f} ops/s")
    ratio = cluster["ops_per_s"] / local_rate
    spread = cluster["cluster"]
    print(f"--cluster, 2 nodes x 1 CPU: {cluster['ops_per_s']:>10,.0f} ops/s   ratio {ratio:.2f}x   "
          f"start skew {spread['start_skew_ms']:.2f} ms ({spread['actors']} actors on {spread['nodes']} nodes)")

if __name__ == "__main__":
    main()
