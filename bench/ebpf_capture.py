"""eBPF capture cost and capacity, next to tcpdump on the same traffic.

Runs memcached (-t 2) on loopback under memcaslap load and prints:
  - memcached throughput without capture, with the eBPF capture, and with tcpdump (ratios to the baseline;
    the goal for eBPF is >= 0.95), measured alternately in the same run;
  - a load sweep (memcaslap concurrency 1..max): achieved rate and dropped events with the eBPF capture, hence
    the highest rate with zero drops and the drop rate at memcached's maximum;
  - membench's user-space CPU per captured event (getrusage in the consumer) and the kernel-side BPF time per
    program run (bpf_stats), and tcpdump's CPU per packet for comparison.

Usage (root): python bench/ebpf_capture.py [--seconds 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def consume(port: int) -> None:
    """Child mode: capture until SIGINT, then print counters as JSON."""
    from membench.capture.ebpf.source import EbpfSource
    from membench.capture.stream import StreamChunk

    source = EbpfSource([port])
    signal.signal(signal.SIGINT, lambda *_: source.stop())
    print("ready", flush=True)
    start = resource.getrusage(resource.RUSAGE_SELF)
    chunks = 0
    for item in source:
        if type(item) is StreamChunk:
            chunks += 1
    end = resource.getrusage(resource.RUSAGE_SELF)
    health = source.health
    print(json.dumps({
        "records": health.packets, "chunks": chunks, "bytes": health.bytes_seen,
        "dropped": health.dropped_events, "cpu": end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime,
    }), flush=True)


def memcaslap(port: int, seconds: float, concurrency: int) -> float:
    threads = min(2, concurrency)  # memcaslap wants at least one connection per thread
    out = subprocess.run(["memcaslap", "-s", f"127.0.0.1:{port}", "-T", str(threads), "-c", str(concurrency),
                          "-t", f"{seconds:g}s", "-X", "64"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"TPS: (\d+)", out)
    if match is None:
        raise RuntimeError(f"no TPS in memcaslap output: {out[-300:]}")
    return float(match.group(1))


def bpf_run_stats(pid: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the BPF programs held by pid (needs kernel.bpf_stats_enabled)."""
    total_ns = total_runs = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in info.read_text().splitlines() if ":\t" in line)
            if "prog_id" in fields and "run_time_ns" in fields:
                total_ns += int(fields["run_time_ns"])
                total_runs += int(fields["run_cnt"])
    return total_ns, total_runs


def with_ebpf(port: int, seconds: float, concurrency: int) -> tuple[float, dict[str, float], tuple[int, int]]:
    child = subprocess.Popen([sys.executable, __file__, "--consume", str(port)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the eBPF consumer did not start")
        tps = memcaslap(port, seconds, concurrency)
        kernel = bpf_run_stats(child.pid)
        child.send_signal(signal.SIGINT)
        result = json.loads(child.stdout.read().strip().splitlines()[-1])
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    return tps, result, kernel


def with_tcpdump(port: int, seconds: float, concurrency: int, directory: Path) -> tuple[float, int, int, float]:
    """(tps, packets captured, packets dropped, tcpdump CPU seconds)."""
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-s", "0", "-w", str(directory / "bench.pcap"),
                             f"tcp port {port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert dump.stderr is not None
    dump.stderr.readline()  # "listening on lo" once the capture is live
    tps = memcaslap(port, seconds, concurrency)
    time.sleep(0.2)
    dump.send_signal(signal.SIGINT)
    _, _, usage = os.wait4(dump.pid, 0)
    err = dump.stderr.read()
    captured = int(re.search(r"(\d+) packets captured", err).group(1))  # type: ignore[union-attr]
    dropped = int(re.search(r"(\d+) packets dropped by kernel", err).group(1))  # type: ignore[union-attr]
    return tps, captured, dropped, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating baseline/eBPF/tcpdump rounds")
    parser.add_argument("--concurrency", type=int, default=32, help="memcaslap connections at full load")
    parser.add_argument("--consume", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        consume(args.consume)
        return
    for tool in ("memcached", "memcaslap", "tcpdump"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: run scripts/setup.sh")

    port = free_port()
    server = subprocess.Popen(["memcached", "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                               "-t", "2", "-m", "256"])
    stats_flag = Path("/proc/sys/kernel/bpf_stats_enabled")
    stats_before = stats_flag.read_text().strip()
    try:
        time.sleep(0.3)
        memcaslap(port, 1, args.concurrency)  # warm-up: fill the cache so gets hit
        base, ebpf, dump = [], [], []
        ebpf_results: list[dict[str, float]] = []
        dump_results: list[tuple[int, int, float]] = []
        with tempfile.TemporaryDirectory() as directory:
            for _ in range(args.rounds):
                base.append(memcaslap(port, args.seconds, args.concurrency))
                tps, result, _ = with_ebpf(port, args.seconds, args.concurrency)
                ebpf.append(tps)
                ebpf_results.append(result)
                tps, captured, dropped, cpu = with_tcpdump(port, args.seconds, args.concurrency, Path(directory))
                dump.append(tps)
                dump_results.append((captured, dropped, cpu))

        baseline = sum(base) / len(base)
        ebpf_tps = sum(ebpf) / len(ebpf)
        dump_tps = sum(dump) / len(dump)
        records = sum(r["records"] for r in ebpf_results)
        cpu = sum(r["cpu"] for r in ebpf_results)
        dropped = sum(r["dropped"] for r in ebpf_results)
        packets = sum(c for c, _, _ in dump_results)
        dump_dropped = sum(d for _, d, _ in dump_results)
        dump_cpu = sum(c for _, _, c in dump_results)
        print(f"memcached -t 2, memcaslap -T 2 -c {args.concurrency}, {args.rounds} x {args.seconds:g} s per mode")
        print(f"  throughput without capture : {baseline:10.0f} ops/s")
        print(f"  throughput with eBPF       : {ebpf_tps:10.0f} ops/s   ratio {ebpf_tps / baseline:.3f} (goal >= 0.95)")
        print(f"  throughput with tcpdump    : {dump_tps:10.0f} ops/s   ratio {dump_tps / baseline:.3f}")
        print(f"  eBPF events {records}, dropped {dropped} ({dropped / max(records + dropped, 1):.2%}); "
              f"user CPU {cpu:.2f} s = {cpu / max(records, 1) * 1e6:.2f} us/event")
        print(f"  tcpdump packets {packets}, dropped {dump_dropped}; CPU {dump_cpu:.2f} s = "
              f"{dump_cpu / max(packets, 1) * 1e6:.2f} us/packet")

        print("load sweep with eBPF capture (kernel BPF time from bpf_stats):")
        stats_flag.write_text("1")
        best_clean = 0.0
        concurrency = 1
        while concurrency <= args.concurrency:
            tps, result, (run_ns, runs) = with_ebpf(port, args.seconds, concurrency)
            total = result["records"] + result["dropped"]
            if result["dropped"] == 0:
                best_clean = max(best_clean, tps)
            print(f"  c={concurrency:3d}: {tps:9.0f} ops/s  events {result['records']:9.0f}  dropped "
                  f"{result['dropped']:7.0f} ({result['dropped'] / max(total, 1):.2%})  user "
                  f"{result['cpu'] / max(result['records'], 1) * 1e6:.2f} us/event  kernel "
                  f"{run_ns / max(runs, 1):.0f} ns/program run")
            concurrency *= 2
        print(f"  highest rate with zero dropped events: {best_clean:.0f} ops/s "
              f"({best_clean / baseline:.2f} of memcached's uncaptured maximum)")
    finally:
        stats_flag.write_text(stats_before)
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
