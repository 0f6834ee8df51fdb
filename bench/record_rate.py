"""`membench record` rate: operations/s end to end on a 1.2M-packet memcaslap capture, beside tshark decoding the same
file in the same run, and the per-stage split that shows where the time goes.

The capture is bench/pcap_ingest.py's (real memcaslap traffic on loopback, cached under /tmp/membench-bench/; made on
the first run). Stages, each timed over the whole file in this process:
  1. walk, parse, pair, hash: the compiled path: PcapFileSource.feed into the compiled pipeline (packets decoded,
                              reassembled and parsed in C), rows kept, not written
  2. + write the profile:     the Recorder into the ProfileWriter `record` uses for a file (each part written once, in
                              its final encoding), closing included
  end to end:                 `python -m membench record FILE OUT -p PORT -q` as a user runs it: stage 2 plus the
                              interpreter's start and imports; the headline figure
For reference, the Python specification's path on the same file (PcapFileSource's stream items into the Python
RecordPipeline, as MEMBENCH_NO_EXTENSIONS=1 runs it) is timed too.
Baseline: tshark, told the port carries memcache (`-d tcp.port==P,memcache -Y memcache -T fields -e
memcache.command`), decodes the same packets. It does less than membench (no pairing, no anonymizing, no profile),
so the ratio understates membench's lead.

    python bench/record_rate.py [--packets N] [--regenerate] [--skip-tshark]
"""

from __future__ import annotations

import os

# As the membench CLI does (cli.py): numpy's OpenBLAS threads would spin beside the measured work. And as `record`
# does (record/process_setup.py), Arrow allocates from the C heap, chosen before pyarrow loads: the in-process
# stages then run as the CLI does.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import pcap_ingest

from membench.capture.pcap import PcapFileSource
from membench.capture.stream import ConnectionClosed, ConnectionOpened, StreamChunk
from membench.extensions import describe
from membench.profile.metadata import ProfileMetadata
from membench.profile.writer import ProfileWriter
from membench.record.anonymize import KeyHasher
from membench.record.pipeline import RecordPipeline, new_pipeline
from membench.record.recorder import Recorder


def compiled_walk(port: int) -> tuple[float, int]:
    """Seconds for the compiled path over the whole file (rows kept, not written), and the requests it saw."""
    pipeline = new_pipeline(KeyHasher.random())
    if isinstance(pipeline, RecordPipeline):
        raise SystemExit("the compiled twins are not built (or MEMBENCH_NO_EXTENSIONS is set)")
    started = time.perf_counter()
    PcapFileSource(pcap_ingest.CAPTURE, [port]).feed(pipeline, threading.Lock())
    pipeline.close_all(0)
    return time.perf_counter() - started, pipeline.health()[1]["requests"]


def specification_path(port: int) -> tuple[float, int]:
    """Seconds for the Python specification over the whole file (stream items into the Python pipeline)."""
    pipeline = RecordPipeline(KeyHasher.random())
    started = time.perf_counter()
    for item in PcapFileSource(pcap_ingest.CAPTURE, [port]):
        if type(item) is StreamChunk:
            pipeline.chunk(*item)
        elif type(item) is ConnectionOpened:
            pipeline.open(item.conn, item.mid_stream)
        elif type(item) is ConnectionClosed:
            pipeline.close(item.conn, item.timestamp_ns)
    pipeline.close_all(0)
    return time.perf_counter() - started, pipeline.health()[1]["requests"]


def recorder_in_process(port: int) -> tuple[float, int]:
    """Seconds for Recorder.run over the file into a profile as `record` writes it, closing included; operations."""
    with tempfile.TemporaryDirectory() as scratch:
        source = PcapFileSource(pcap_ingest.CAPTURE, [port])
        metadata = ProfileMetadata(source=source.name, ports=[port])
        started = time.perf_counter()
        with ProfileWriter.for_input_file(Path(scratch) / "profile", metadata) as writer:
            summary = Recorder(source, writer, KeyHasher.random()).run()
        return time.perf_counter() - started, summary.operations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=1_000_000, help="minimum packets in the capture")
    parser.add_argument("--regenerate", action="store_true", help="capture again even if a cached file exists")
    parser.add_argument("--skip-tshark", action="store_true", help="leave out the baseline (it takes ~20 s)")
    args = parser.parse_args()

    if args.regenerate or not pcap_ingest.CAPTURE.exists() or not pcap_ingest.CAPTURE_INFO.exists():
        info = pcap_ingest.generate(args.packets)
    else:
        info = json.loads(pcap_ingest.CAPTURE_INFO.read_text())
    port = info["port"]
    print(f"record pipeline: {describe()}")
    print(f"capture: {pcap_ingest.CAPTURE} ({pcap_ingest.CAPTURE.stat().st_size / 1e6:.0f} MB, "
          f"{info['packets']:,} packets of memcaslap traffic on port {port})")

    packets = info["packets"]
    # Best of two: the first pass over the file also pays for its cold pages and the allocator's first growth,
    # which made stage 2 look faster than stage 1 that it contains.
    walk_s, requests = min(compiled_walk(port) for _ in range(2))
    record_s, operations = min(recorder_in_process(port) for _ in range(2))
    specification_s, specification_requests = specification_path(port)
    if specification_requests != requests:
        raise SystemExit(f"the specification saw {specification_requests:,} requests, the compiled path {requests:,}")
    end_to_end_s, cli_operations = pcap_ingest.record_end_to_end(port)
    if cli_operations != operations:
        raise SystemExit(f"the CLI recorded {cli_operations:,} operations, the in-process run {operations:,}")

    print(f"{operations:,} operations ({requests:,} requests) from {packets:,} packets")
    print("in-process stage             seconds   operations/s   µs/op added by the stage")
    previous = 0.0
    for name, seconds in (("1 walk, parse, pair, hash", walk_s), ("2 + write the profile", record_s)):
        added_us = (seconds - previous) / operations * 1e6
        print(f"{name:<28} {seconds:9.2f} {operations / seconds:14,.0f} {added_us:10.2f}")
        previous = seconds
    print(f"(the Python specification's path, for reference: {specification_s:.2f} s = "
          f"{operations / specification_s:,.0f} operations/s)")
    rate = operations / end_to_end_s
    print(f"membench record end to end (CLI, interpreter start included): {end_to_end_s:.2f} s = {rate:,.0f} "
          "operations/s")

    if not args.skip_tshark:
        tshark_s = pcap_ingest.tshark_seconds(port)
        print(f"tshark -Y memcache -T fields -e memcache.command (decode only, no pairing): {tshark_s:.2f} s = "
              f"{packets / tshark_s:,.0f} packets/s, {operations / tshark_s:,.0f} of these operations/s")
        print(f"ratio membench record / tshark: {tshark_s / end_to_end_s:.1f}x (time for the same file)")


if __name__ == "__main__":
    main()
