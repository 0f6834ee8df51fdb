"""What socket-level capture costs memcached before it copies a byte, next to tcpdump in the same run.

`bench/ebpf_capture.py` finds memcached slower beside `membench record ebpf:any` than beside tcpdump. This splits
that cost in two, so that the part no change to membench's copying can remove is measured, not guessed:
  - floor: `membench record ebpf:any --port P` with nothing on port P. The same programs run at every socket
    send and receive of every process and decide memcached's sockets are not watched: the price of being a
    socket tracepoint program, with nothing copied, nothing in the ring and nothing for the recorder to do;
  - recording: the same command on memcached's port, the whole pipeline;
  - tcpdump -w on the same traffic.
Each round runs memcached (-t 2) under memcaslap (-T 2, 64-byte values) uncaptured, then the three captures in a
shuffled order; a ratio is a capture's rate over its round's uncaptured rate. The medians of the round-by-round
differences come with 95% bootstrap intervals.

Usage (root): python bench/ebpf_floor.py [--seconds 2] [--rounds 16] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ebpf_capture import median_interval, memcaslap
from local_memcached import free_port, require_tools, start_memcached

RECORDER_START_S = 1.5  # import, load and attach, so that the load meets a live capture


def under_recorder(watched: int, port: int, args: argparse.Namespace, profile: Path) -> float:
    """memcaslap's rate on memcached's port while `membench record ebpf:any --port watched` runs."""
    recorder = subprocess.Popen([sys.executable, "-m", "membench", "record", "ebpf:any", str(profile), "--port",
                                 str(watched), "--quiet", "--force"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(RECORDER_START_S)
        if recorder.poll() is not None:
            raise SystemExit(f"membench record exited early ({recorder.returncode}): run it by hand to see why")
        return memcaslap(port, args.seconds, args.concurrency)
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait()


def under_tcpdump(port: int, args: argparse.Namespace, pcap: Path) -> float:
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-s", "0", "-w", str(pcap), f"tcp port {port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert dump.stderr is not None
    try:
        dump.stderr.readline()  # "listening on lo" once the capture is live
        return memcaslap(port, args.seconds, args.concurrency)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait()


def measure(port: int, args: argparse.Namespace, directory: Path) -> dict[str, list[float]]:
    """Each capture's ratio to its round's uncaptured rate, round by round."""
    idle_port = free_port()
    captures: dict[str, Callable[[], float]] = {
        "floor": lambda: under_recorder(idle_port, port, args, directory / "floor-profile"),
        "recording": lambda: under_recorder(port, port, args, directory / "profile"),
        "tcpdump": lambda: under_tcpdump(port, args, directory / "bench.pcap"),
    }
    ratios: dict[str, list[float]] = {name: [] for name in captures}
    order = random.Random(0)
    for _ in range(args.rounds):
        uncaptured = memcaslap(port, args.seconds, args.concurrency)
        names = list(captures)
        order.shuffle(names)
        for name in names:
            ratios[name].append(captures[name]() / uncaptured)
    return ratios


def print_difference(label: str, first: list[float], second: list[float]) -> None:
    gaps = [a - b for a, b in zip(first, second, strict=True)]
    low, high = median_interval(gaps)
    print(f"  {label}: median {statistics.median(gaps):+.3f}, 95% interval {low:+.3f} .. {high:+.3f}, "
          f"range {min(gaps):+.3f} .. {max(gaps):+.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=16, help="rounds of uncaptured + the three captures")
    parser.add_argument("--concurrency", type=int, default=32, help="memcaslap connections")
    args = parser.parse_args()
    require_tools("memcached", "memcaslap", "tcpdump")
    server, port = start_memcached()
    try:
        memcaslap(port, 1, args.concurrency)  # warm-up: fill the cache so gets hit
        with tempfile.TemporaryDirectory() as name:
            ratios = measure(port, args, Path(name))
    finally:
        server.terminate()
        server.wait()
    print(f"memcached -t 2, memcaslap -T 2 -c {args.concurrency} -X 64, {args.rounds} rounds x {args.seconds:g} s; "
          "median of the rate over the round's uncaptured rate:")
    for name, values in ratios.items():
        print(f"  {name:10s} {statistics.median(values):.3f}")
    print("round by round:")
    print_difference("floor - tcpdump     (what the socket programs cost, against the packet tap)",
                     ratios["floor"], ratios["tcpdump"])
    print_difference("recording - floor   (what copying, the ring and the recorder add)",
                     ratios["recording"], ratios["floor"])
    print_difference("recording - tcpdump (the target: >= 0)", ratios["recording"], ratios["tcpdump"])


if __name__ == "__main__":
    main()
