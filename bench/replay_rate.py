"""How fast `membench replay` drives memcached, next to memaslap, memtier and a naive asyncio client, same run.

One memcached on loopback (-t 2), 50 connections, 1 set : 10 gets, 100-byte values, 30-byte keys over 10,000
keys (all present: warm-up / preload), closed loop at depth 1 and depth 16. Prints ops/s and client CPU µs per
op of each tool (and the kernel's part of it: the system calls, mostly loopback TCP, that no client can avoid),
and membench's ratio to each peer. A floor stands beside them: a bare uvloop protocol doing the same operations
with no parsing or accounting at all, i.e. the least CPU per operation a client on uvloop spends on this machine.
memtier_benchmark, which Debian does not package, runs beside them at both depths when it is on PATH (or named by
$MEMTIER_BENCHMARK): build it from its sources to compare with it in the same run.

Then the start of a big replay: a profile of --start-ops operations (over --start-keys keys) written to disk, its
survey on its own (µs per row), and `membench replay` run on it as a user does: seconds until memcached sees the
first request, and the process's peak RSS a few seconds into the replay (then it is interrupted). No peer tool
replays a profile, so these figures stand alone.

    python bench/replay_rate.py [--seconds 5] [--ops 200000] [--start-ops 10000000] [--start-keys 10000]
"""

from __future__ import annotations

import os

# As the membench CLI does (cli.py): numpy's OpenBLAS threads would spin beside the measured work.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from local_memcached import start_memcached
from replay_peers import (
    CONNECTIONS,
    KEY_LENGTH,
    KEYS,
    SET_EVERY,
    VALUE_LENGTH,
    Figures,
    run_bare,
    run_memaslap,
    run_memtier,
    run_naive,
)

from membench.profile.metadata import ProfileMetadata
from membench.profile.reader import ProfileReader
from membench.profile.schema import SCHEMA
from membench.profile.writer import ProfileWriter
from membench.replay.options import ReplayOptions
from membench.replay.run import replay
from membench.replay.survey import survey


def profile_table(rows: int, keys: int = KEYS) -> pa.Table:
    """`rows` operations over `keys` keys drawn at random."""
    index = np.arange(rows)
    is_set = index % SET_EVERY == 0
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, keys, dtype=np.uint64)[rng.integers(0, keys, rows)]
    command = np.where(is_set, "set", "get")
    columns = {
        "timestamp_ns": pa.array(1_700_000_000_000_000_000 + index * 10_000, pa.int64()),
        "connection": pa.array(index % CONNECTIONS, pa.uint32()),
        "command": pa.array(command).dictionary_encode().cast(SCHEMA.field("command").type),
        "protocol": pa.array(["text"] * rows).dictionary_encode().cast(SCHEMA.field("protocol").type),
        "key_hash": pa.array(hashes, pa.uint64()),
        "key_length": pa.array(np.full(rows, KEY_LENGTH), pa.uint16()),
        "value_length": pa.array(np.full(rows, VALUE_LENGTH), pa.uint32()),
        "flags": pa.array(np.zeros(rows), pa.uint32()),
        "ttl": pa.array(np.zeros(rows), pa.int32()),
        "status": pa.array(np.where(is_set, "stored", "hit")).dictionary_encode().cast(SCHEMA.field("status").type),
        "latency_us": pa.array(np.full(rows, 50), pa.uint32()),
        "batch": pa.array(index + 1, pa.uint64()),
        "quiet": pa.array(np.zeros(rows, dtype=bool)),
        **{name: pa.nulls(rows, SCHEMA.field(name).type) for name in ("effect", "delta", "initial")},
    }
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def run_membench(port: int, table: pa.Table, depth: int, loops: int, workers: int = 1,
                 key_order: bool = True) -> Figures:
    options = ReplayOptions(targets=[f"127.0.0.1:{port}"], pipeline=depth, loops=loops, progress=False,
                            key_order=key_order, workers=workers)
    result = replay(lambda: iter(table.to_batches(max_chunksize=65536)), options).to_dict()
    assert not result["errors"], result["errors"]
    return Figures(result["ops_per_s"], result["client_cpu_us_per_op"], result["client_cpu_system_us_per_op"])


def _cmd_get(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            data += sock.recv(65536)
    match = re.search(rb"STAT cmd_get (\d+)", data)
    assert match is not None
    return int(match.group(1))


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _each_its_own_key(table: pa.Table, first: int) -> pa.Table:
    """The rows of `table`, the `first`-th of the profile onwards, each with a key no other row has."""
    # Times an odd number modulo 2**64: distinct row numbers give distinct hashes.
    hashes = np.arange(first, first + table.num_rows, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return table.set_column(table.schema.get_field_index("key_hash"), "key_hash", pa.array(hashes, pa.uint64()))


def measure_start(port: int, ops: int, keys: int) -> None:
    """Survey rate, time to the first request and peak RSS of a replay of an `ops`-operation profile over `keys`
    keys (as many as `ops`: each operation its own key)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.profile"
        chunk = 1_000_000
        with ProfileWriter(path, ProfileMetadata(source="bench:replay")) as writer:
            for first in range(0, ops, chunk):
                table = profile_table(min(chunk, ops - first), keys)
                if keys == ops:
                    table = _each_its_own_key(table, first)
                writer.write_batch(table.set_column(0, "timestamp_ns", pa.compute.add(table["timestamp_ns"],
                                                                                      first * 10_000)))
        reader = ProfileReader(path)
        began = time.perf_counter()
        found = survey(lambda: reader.batches(batch_size=65536))
        survey_s = time.perf_counter() - began
        before = _cmd_get(port)
        began = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "membench", "replay", str(path), "--target",
                                 f"127.0.0.1:{port}", "--no-progress"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        first_request_s = float("nan")
        while proc.poll() is None and time.perf_counter() - began < 120:
            if _cmd_get(port) > before:
                first_request_s = time.perf_counter() - began
                break
            time.sleep(0.02)
        time.sleep(5)
        peak = _peak_rss_mib(proc.pid)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    print(f"{ops:,}-operation profile over {keys:,} keys: survey {survey_s:.2f} s "
          f"({survey_s * 1e6 / found.rows:.2f} µs/row, {len(found.warm):,} warm keys); first request "
          f"{first_request_s:.2f} s after `membench replay` started (survey and warm-up included); "
          f"peak RSS {peak:,.0f} MiB 5 s into the replay")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="length of each peer run")
    parser.add_argument("--ops", type=int, default=200_000, help="operations in the replayed profile")
    parser.add_argument("--loops", type=int, default=2, help="times membench replays the profile per depth")
    parser.add_argument("--start-ops", type=int, default=10_000_000,
                        help="operations of the profile whose replay start is measured (0: skip)")
    parser.add_argument("--start-keys", type=int, default=KEYS,
                        help="distinct keys of that profile (as many as --start-ops: each operation its own key)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every tool at every depth (a 2-core machine drifts by 10%% run to run)")
    args = parser.parse_args()
    server, port = start_memcached(None, "-c", "4096")
    runs: dict[int, dict[str, list[Figures]]] = {1: {}, 16: {}}
    try:
        table = profile_table(args.ops)
        for _ in range(args.rounds):
            for depth, tools in runs.items():
                for name, figures in run_round(port, table, depth, args).items():
                    tools.setdefault(name, []).append(figures)
        if args.start_ops:
            measure_start(port, args.start_ops, args.start_keys)
    finally:
        server.terminate()
        server.wait()
    print(f"memcached -t 2 on loopback, {CONNECTIONS} connections, 1:{SET_EVERY - 1} set:get, "
          f"{VALUE_LENGTH}-byte values; median of {args.rounds} rounds")
    print(f"{'depth':>5}  {'tool':<24} {'ops/s':>10} {'CPU µs/op':>10} {'(kernel)':>9}")
    for depth, tools in runs.items():
        for name, figures in tools.items():
            rate, cpu, system = (statistics.median(values) for values in zip(*figures, strict=True))
            print(f"{depth:>5}  {name:<24} {rate:>10,.0f} {cpu:>10.1f} {system:>9.1f}")
        for peer in (NAIVE, MEMASLAP, MEMTIER, BARE):
            if peer in tools:
                print_ratios(tools[MEMBENCH], tools[peer], peer)
        if depth == 16:
            print("       (memaslap has no pipelining depth: compared at depth 1 only)")


MEMBENCH, NAIVE, MEMASLAP = "membench replay", "naive asyncio streams", "memaslap (-T 1)"
BARE = "floor: bare uvloop"
MEMTIER = "memtier_benchmark (-t 1)"


def run_round(port: int, table: pa.Table, depth: int, args: argparse.Namespace) -> dict[str, Figures]:
    """Every tool once at this depth, membench first. --order connection: what keeping the recorded order across
    connections (the default) costs."""
    figures = {MEMBENCH: run_membench(port, table, depth, args.loops),
               "membench --order conn.": run_membench(port, table, depth, args.loops, key_order=False)}
    if depth == 1:
        figures["membench --workers 2"] = run_membench(port, table, depth, args.loops, workers=2)
    figures[NAIVE] = run_naive(port, depth, args.seconds)
    figures[BARE] = run_bare(port, depth, args.seconds)
    memaslap = run_memaslap(port, args.seconds) if depth == 1 else None
    if memaslap is not None:
        figures[MEMASLAP] = memaslap
    memtier = run_memtier(port, depth, args.seconds)
    if memtier is not None:
        figures[MEMTIER] = memtier
    return figures


def print_ratios(membench: list[Figures], peer: list[Figures], name: str) -> None:
    """membench over the peer, round by round (each beside the peer's run of the same round)."""
    rates = [ours.ops_per_s / theirs.ops_per_s for ours, theirs in zip(membench, peer, strict=True)]
    cpus = [ours.cpu_us_per_op / theirs.cpu_us_per_op for ours, theirs in zip(membench, peer, strict=True)]
    print(f"       membench / {name}: ops/s {statistics.median(rates):.2f}x median, {min(rates):.2f}x lowest "
          f"({', '.join(f'{rate:.2f}' for rate in rates)}); CPU per op {statistics.median(cpus):.2f}x median")


if __name__ == "__main__":
    main()
