"""Bytes per operation of a profile, for 1M Zipf-distributed operations over 100k keys.

Prints the profile's size and the same rows as gzip'd CSV and as uncompressed Arrow IPC (naive baselines measured
in the same run), with the ratios. Also prints the writer's rate through its per-operation `write()` path.

    python bench/profile_size.py [--ops 1000000] [--keys 100000]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from membench.profile.metadata import ProfileMetadata
from membench.profile.schema import SCHEMA, Operation
from membench.profile.writer import ProfileWriter

START_NS = 1_700_000_000_000_000_000


def zipf_table(ops: int, keys: int, seed: int = 7, exponent: float = 0.99, connections: int = 64,
               start_ns: int = START_NS, first_request: int = 0) -> pa.Table:
    """A cache-like workload: Zipf key popularity, 90% get / 8% set / 2% delete, 90% hit ratio, ~100k ops/s.

    The key population (hashes, key and value sizes) depends only on `keys`, so tables made with different seeds
    and consecutive `start_ns` / `first_request` continue one workload.
    """
    population = np.random.default_rng(keys)
    key_hashes = population.integers(0, np.iinfo(np.uint64).max, size=keys, dtype=np.uint64, endpoint=True)
    key_lengths = population.integers(12, 48, size=keys).astype(np.uint16)
    value_sizes = np.clip(population.lognormal(6.0, 1.2, size=keys), 1, 1 << 20).astype(np.uint32)
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, keys + 1) ** exponent
    ranks = np.searchsorted(np.cumsum(weights) / weights.sum(), rng.random(ops))
    ranks = np.minimum(ranks, keys - 1)
    draw = rng.random(ops)
    is_get, is_set = draw < 0.90, (draw >= 0.90) & (draw < 0.98)
    hit = is_get & (rng.random(ops) < 0.9)
    command = np.where(is_get, "get", np.where(is_set, "set", "delete"))
    status = np.where(is_get, np.where(hit, "hit", "miss"),
                      np.where(is_set, "stored", np.where(rng.random(ops) < 0.5, "deleted", "not_found")))
    timestamps = start_ns + np.cumsum(rng.exponential(10_000, size=ops)).astype(np.int64)
    latency = np.clip(rng.lognormal(3.0, 0.6, size=ops), 1, 1e6).astype(np.uint32)
    has_value = hit | is_set
    columns = {
        "timestamp_ns": pa.array(timestamps),
        "connection": pa.array(rng.integers(0, connections, size=ops).astype(np.uint32)),
        "command": pa.array(command).dictionary_encode(),
        "protocol": pa.array(np.full(ops, "text")).dictionary_encode(),
        "key_hash": pa.array(key_hashes[ranks]),
        "key_length": pa.array(key_lengths[ranks]),
        "value_length": pa.array(value_sizes[ranks], mask=~has_value),
        "flags": pa.array(np.zeros(ops, dtype=np.uint32), mask=~is_set),
        "ttl": pa.array(np.full(ops, 3600, dtype=np.int32), mask=~is_set),
        "status": pa.array(status).dictionary_encode(),
        "latency_us": pa.array(latency),
        "batch": pa.array(np.arange(first_request, first_request + ops, dtype=np.uint64)),
        "quiet": pa.array(np.zeros(ops, dtype=bool)),
        **{name: pa.nulls(ops, SCHEMA.field(name).type) for name in ("effect", "delta", "initial")},
    }
    return pa.table(columns).cast(SCHEMA)


def operations(table: pa.Table) -> list[Operation]:
    return [Operation(*row) for row in zip(*(table[name].to_pylist() for name in SCHEMA.names), strict=True)]


def directory_size(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    table = zipf_table(args.ops, args.keys)
    rows = operations(table)
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "bench.profile"
        began = time.perf_counter()
        with ProfileWriter(profile, ProfileMetadata(source="bench:zipf")) as writer:
            for op in rows:
                writer.write(op)
            written = time.perf_counter()
        closed = time.perf_counter()
        profile_bytes = directory_size(profile)
        parts = len([p for p in profile.iterdir() if p.suffix == ".parquet"])

    text = io.StringIO()
    csv_writer = csv.writer(text)
    csv_writer.writerow(SCHEMA.names)
    csv_writer.writerows(tuple("" if v is None else v for v in op) for op in rows)
    csv_gzip_bytes = len(gzip.compress(text.getvalue().encode(), compresslevel=6))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, SCHEMA) as ipc:
        ipc.write_table(table)
    ipc_bytes = sink.getvalue().size

    n = args.ops
    print(f"workload: {n} operations, Zipf(0.99) over {args.keys} keys")
    print(f"membench profile: {profile_bytes / n:.2f} bytes/op ({profile_bytes} bytes, {parts} part file(s))")
    print(f"CSV + gzip -6:    {csv_gzip_bytes / n:.2f} bytes/op  (profile is {csv_gzip_bytes / profile_bytes:.2f}x "
          "smaller)")
    print(f"Arrow IPC raw:    {ipc_bytes / n:.2f} bytes/op  (profile is {ipc_bytes / profile_bytes:.2f}x smaller)")
    print(f"writer: {n / (written - began):,.0f} write() calls/s including part flushes; "
          f"close + compaction {closed - written:.2f} s")


if __name__ == "__main__":
    main()
