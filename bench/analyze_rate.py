"""Operations per second of `analyze_profile` on a 10M-operation profile (Zipf over 1M keys).

The baseline, measured in the same run, computes the same statistics (command mix, hit ratio, per-key counts and
hot-key shares, size and latency percentiles, per-second counts) with a straightforward per-row Python loop over a
sample of the profile read with pyarrow; the ratio is analyze's rate over the loop's rate.

    python bench/analyze_rate.py [--ops 10000000] [--keys 1000000] [--sample 500000] [--profile DIR]
"""

from __future__ import annotations

import os

# As the membench CLI does (cli.py): numpy's OpenBLAS threads would spin beside the measured work.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import resource
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from profile_size import START_NS, zipf_table

from membench.analyze import analyze_profile
from membench.profile.metadata import ProfileMetadata
from membench.profile.reader import ProfileReader
from membench.profile.writer import ProfileWriter

CHUNK = 1_000_000


def generate(path: Path, ops: int, keys: int) -> None:
    with ProfileWriter(path, ProfileMetadata(source="bench:zipf"), overwrite=True) as writer:
        start_ns = START_NS
        for first in range(0, ops, CHUNK):
            table = zipf_table(min(CHUNK, ops - first), keys, seed=first // CHUNK, start_ns=start_ns,
                               first_request=first)
            writer.write_batch(table)
            start_ns = table["timestamp_ns"][-1].as_py() + 10_000


def nearest_rank(sorted_values: list[int], fraction: float) -> int | None:
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


def naive_loop(reader: ProfileReader, sample: int) -> int:
    """The per-row way: dicts and lists filled one row at a time, sorted at the end. Returns rows processed."""
    commands: Counter[tuple[str, str]] = Counter()
    per_key: Counter[int] = Counter()
    per_second: Counter[int] = Counter()
    sizes: dict[str, list[int]] = defaultdict(list)
    latency: dict[str, list[int]] = defaultdict(list)
    rows = 0
    for batch in reader.batches(("timestamp_ns", "command", "status", "key_hash", "key_length", "value_length",
                                 "latency_us"), batch_size=65536):
        for row in batch.to_pylist():
            commands[row["command"], row["status"]] += 1
            if row["key_hash"] is not None:
                per_key[row["key_hash"]] += 1
                sizes["key"].append(row["key_length"])
            if row["value_length"] is not None:
                sizes["hit" if row["status"] == "hit" else "stored"].append(row["value_length"])
            if row["latency_us"] is not None:
                latency[row["command"]].append(row["latency_us"])
            per_second[row["timestamp_ns"] // 1_000_000_000] += 1
            rows += 1
        if rows >= sample:
            break
    ranked = sorted(per_key.values(), reverse=True)
    _ = sum(ranked[: math.ceil(len(ranked) / 100)]), sum(ranked[: math.ceil(len(ranked) / 10)])
    for values in (*sizes.values(), *latency.values()):
        ordered = sorted(values)
        _ = [nearest_rank(ordered, q) for q in (0.5, 0.9, 0.99, 0.999)]
    _ = max(per_second.values()), min(per_second.values())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10_000_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=500_000, help="rows the naive loop processes")
    parser.add_argument("--profile", type=Path, help="keep the generated profile here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.profile or Path(tmp) / "bench.profile"
        began = time.perf_counter()
        generate(path, args.ops, args.keys)
        size = sum(p.stat().st_size for p in path.iterdir())
        print(f"generated {args.ops:,} operations over {args.keys:,} keys in {time.perf_counter() - began:.1f} s "
              f"({size / args.ops:.2f} bytes/op)")

        began, began_cpu = time.perf_counter(), time.process_time()
        report = analyze_profile(ProfileReader(path))
        analyze_s = time.perf_counter() - began
        analyze_cpu_s = time.process_time() - began_cpu
        assert report.operations == args.ops
        analyze_rate = args.ops / analyze_s
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"membench analyze: {analyze_rate:,.0f} ops/s ({analyze_s:.2f} s wall, {analyze_cpu_s:.2f} s CPU for "
              f"{args.ops:,} operations, {report.keys.distinct_keys:,} distinct keys; process peak RSS "
              f"{peak_mib:,.0f} MiB)")

        began, began_cpu = time.perf_counter(), time.process_time()
        rows = naive_loop(ProfileReader(path), args.sample)
        naive_rate = rows / (time.perf_counter() - began)
        naive_cpu_s = time.process_time() - began_cpu
        print(f"per-row Python loop: {naive_rate:,.0f} ops/s ({naive_cpu_s:.2f} s CPU for the first {rows:,} "
              "operations)")
        print(f"ratio: analyze is {analyze_rate / naive_rate:.1f}x the per-row loop in wall time, "
              f"{(args.ops / analyze_cpu_s) / (rows / naive_cpu_s):.1f}x per CPU second "
              "(the machine's load shifts the first figure, less the second)")


if __name__ == "__main__":
    main()
