"""pcap ingest rate: PcapFileSource packets/s over a 1M+ packet capture of real memcached traffic, beside tshark's
rate on the same file measured in the same run, and `membench record` on that file end to end (operations/s).

The capture is real traffic, made once and cached under /tmp/membench-bench/: memcaslap (libmemcached-tools)
drives a memcached on a free loopback port (its default 90% get / 10% set mix, 100-byte values, 2 threads,
16 connections) while tcpdump writes every packet of that port. tshark is told the port carries memcache
(`-d tcp.port==P,memcache`) and decodes every packet with a memcache display filter, printing one field.

    python bench/pcap_ingest.py [--packets N] [--regenerate]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from local_memcached import number_in, require_tools, start_memcached

from membench.capture.pcap import PcapFileSource

CACHE = Path("/tmp/membench-bench")
CAPTURE = CACHE / "pcap_ingest.pcap"
CAPTURE_INFO = CACHE / "pcap_ingest.json"


def generate(min_packets: int) -> dict[str, int]:
    require_tools("memcached", "memcaslap", "tcpdump")
    CACHE.mkdir(exist_ok=True)
    operations = min_packets // 2 + min_packets // 10  # about two packets per operation, with a margin
    while True:
        server, port = start_memcached()
        try:
            dump = subprocess.Popen(["tcpdump", "-i", "lo", "-B", "262144", "-s", "0", "-w", str(CAPTURE),
                                     f"tcp port {port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True)
            assert dump.stderr is not None
            assert "listening" in dump.stderr.readline()
            subprocess.run(["memcaslap", "-s", f"127.0.0.1:{port}", "-x", str(operations), "-T", "2", "-c", "16",
                            "-X", "100"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            dump.send_signal(signal.SIGINT)
            _, err = dump.communicate(timeout=60)
        finally:
            server.terminate()
            server.wait()
        captured = number_in(r"(\d+) packets captured", err)
        dropped = number_in(r"(\d+) packets? dropped by kernel", err)
        if captured >= min_packets:
            info = {"port": port, "packets": captured, "dropped_by_kernel": dropped, "operations": operations}
            CAPTURE_INFO.write_text(json.dumps(info))
            return info
        operations = operations * min_packets // max(captured, 1) + 1000


def membench_source_rate(port: int) -> tuple[float, int, int, float]:
    source = PcapFileSource(CAPTURE, [port])
    items = 0
    started = time.perf_counter()
    for _ in source:
        items += 1
    elapsed = time.perf_counter() - started
    return elapsed, source.health.packets, items, source.health.bytes_seen


def tshark_seconds(port: int) -> float:
    started = time.perf_counter()
    subprocess.run(["tshark", "-r", str(CAPTURE), "-d", f"tcp.port=={port},memcache", "-Y", "memcache",
                    "-T", "fields", "-e", "memcache.command"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def record_end_to_end(port: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "membench", "record", str(CAPTURE), f"{scratch}/profile",
                                 "-p", str(port), "-q"], capture_output=True, text=True, check=True)
        elapsed = time.perf_counter() - started
    operations = number_in(r"recorded ([\d,]+) operations", result.stdout + result.stderr)
    return elapsed, operations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=1_000_000, help="minimum packets in the capture")
    parser.add_argument("--regenerate", action="store_true", help="capture again even if a cached file exists")
    args = parser.parse_args()

    if args.regenerate or not CAPTURE.exists() or not CAPTURE_INFO.exists():
        info = generate(args.packets)
    else:
        info = json.loads(CAPTURE_INFO.read_text())
    port = info["port"]
    size = CAPTURE.stat().st_size
    print(f"capture: {CAPTURE} ({size / 1e6:.0f} MB, {info['packets']:,} packets of memcaslap traffic on port "
          f"{port}, tcpdump dropped {info['dropped_by_kernel']})")

    elapsed, packets, items, payload = membench_source_rate(port)
    membench_pps = packets / elapsed
    print(f"membench PcapFileSource: {packets:,} packets, {items:,} stream items in {elapsed:.2f} s = "
          f"{membench_pps:,.0f} packets/s, {size / elapsed / 1e6:,.0f} MB/s of file, "
          f"{payload / elapsed / 1e6:,.0f} MB/s of payload")

    tshark_elapsed = tshark_seconds(port)
    tshark_pps = packets / tshark_elapsed
    print(f"tshark -Y memcache -T fields: {tshark_elapsed:.2f} s = {tshark_pps:,.0f} packets/s, "
          f"{size / tshark_elapsed / 1e6:,.0f} MB/s of file")
    print(f"ratio membench/tshark: {membench_pps / tshark_pps:.1f}x (goal >= 10x)")

    record_elapsed, operations = record_end_to_end(port)
    print(f"membench record end to end (capture, parse, pair, anonymize, write profile): {operations:,} operations "
          f"in {record_elapsed:.2f} s = {operations / record_elapsed:,.0f} ops/s, "
          f"{packets / record_elapsed:,.0f} packets/s; {tshark_elapsed / record_elapsed:.1f}x tshark's time")


if __name__ == "__main__":
    main()
