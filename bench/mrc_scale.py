"""The miss-ratio curve at scale: its error against an exact LRU simulation, and a 100M-operation analysis.

1. Accuracy: on a generated Zipf profile (10M operations by default), the sampled curve `analyze` reports (SHARDS,
   at most SAMPLED_ACCESSES accesses kept) beside the exact simulation of every access, measured in the same run:
   the largest difference in miss ratio at any cache size the curve reports, and the two computations' times.
2. Scale: `membench analyze --json` on a generated 100M-operation profile, as a user runs it, with every analytic;
   its wall time and the analyzing process's peak RSS (the profile is read in batches, so memory stays bounded).

    python bench/mrc_scale.py [--accuracy-ops 10000000] [--ops 100000000] [--keys 1000000] [--dir DIR]

The 100M-operation profile takes about 1 GB and a minute and a half to generate; `--ops 0` skips part 2.
"""

from __future__ import annotations

import os

# As the membench CLI does (cli.py): numpy's OpenBLAS threads would spin beside the measured work.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from analyze_rate import generate

from membench.analyze.batch import ColumnCodes, batch_view
from membench.analyze.compute import COLUMNS
from membench.analyze.mrc import MissRatioCollector
from membench.profile.reader import ProfileReader


def collect(reader: ProfileReader, expected_operations: int) -> MissRatioCollector:
    collector = MissRatioCollector(expected_operations)
    codes = ColumnCodes()
    for batch in reader.batches(COLUMNS):
        collector.add(batch_view(batch, codes))
    return collector


def accuracy(path: Path) -> None:
    reader = ProfileReader(path)
    began = time.perf_counter()
    sampled = collect(reader, reader.num_rows)
    curve = sampled.curve()
    sampled_s = time.perf_counter() - began
    began = time.perf_counter()
    exact = collect(reader, 0).distances()  # a rate of 1: every access simulated
    exact_s = time.perf_counter() - began
    assert curve is not None and exact is not None
    errors = [abs(point.miss_ratio - exact.miss_ratio(point.cache_bytes)) for point in curve.by_bytes]
    worst = max(range(len(errors)), key=errors.__getitem__)
    point = curve.by_bytes[worst]
    print(f"sampled curve: {curve.sampled_accesses:,} of {curve.accesses:,} accesses (rate {curve.sample_rate:.4f}),"
          f" {len(errors)} cache sizes from {curve.by_bytes[0].cache_bytes:,} to {curve.by_bytes[-1].cache_bytes:,}"
          f" bytes, in {sampled_s:.2f} s")
    print(f"exact LRU simulation of all {curve.accesses:,} accesses: {exact_s:.2f} s")
    print(f"largest error: {errors[worst] * 100:.3f} points (at {point.cache_bytes:,} bytes: sampled "
          f"{point.miss_ratio:.4f}, exact {exact.miss_ratio(point.cache_bytes):.4f}); mean "
          f"{sum(errors) / len(errors) * 100:.3f} points; target <= 1 point")
    print(f"ratio: the sampled curve takes {sampled_s / exact_s:.2f}x the exact simulation's time")


# The analysis runs as `membench analyze` does, in a process of its own that reports its own peak RSS: a child's
# ru_maxrss seen from here would include this process's pages, copied at fork, after generating the profile.
_ANALYZE_AND_REPORT_RSS = (
    "import resource, sys; from membench.cli import main; code = main(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)")


def scale(path: Path, ops: int) -> None:
    began = time.perf_counter()
    written = path.with_suffix(".json")
    done = subprocess.run([sys.executable, "-c", _ANALYZE_AND_REPORT_RSS, "analyze", "--json", str(written),
                           str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    wall_s = time.perf_counter() - began
    peak_mib = int(done.stderr.strip().splitlines()[-1]) / 1024
    report = json.loads(written.read_text())
    curve = report["miss_ratio_curve"]
    assert report["operations"] == ops
    print(f"membench analyze --json on {ops:,} operations: {wall_s:.1f} s wall ({ops / wall_s:,.0f} ops/s), peak "
          f"RSS {peak_mib:,.0f} MiB; curve from {curve['sampled_accesses']:,} sampled accesses, "
          f"{len(curve['by_bytes'])} points; target <= 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accuracy-ops", type=int, default=10_000_000)
    parser.add_argument("--ops", type=int, default=100_000_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, help="keep the generated profiles here, and use them again (default: a "
                        "temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = args.dir or Path(tmp)
        for ops, run in ((args.accuracy_ops, accuracy), (args.ops, None)):
            if ops == 0:
                continue
            path = where / f"zipf-{ops}.profile"
            if not path.exists():  # a kept profile (--dir) is used again
                began = time.perf_counter()
                generate(path, ops, args.keys)
                print(f"generated {ops:,} operations over {args.keys:,} keys in {time.perf_counter() - began:.0f} s")
            if run is not None:
                run(path)
            else:
                scale(path, ops)


if __name__ == "__main__":
    main()
