"""Recorder memory with many concurrent connections: `membench record ebpf:any` peak RSS with 10 and with 10,000
open connections (each one mid-conversation when measured), beside tcpdump -w capturing the same 10,000.

Each connection sets a key, gets it, and stays open; then every connection gets its key again, so the recorder
holds state for all of them at once. The figure is the recorder's peak RSS (VmHWM) read while the connections
are open, and the bound per connection it implies.

Usage (root): python bench/record_memory.py [--connections 10000]
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from local_memcached import start_memcached


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmHWM for pid {pid}")


def exchange(sockets: list[socket.socket], message: Callable[[int], bytes], reply_end: bytes) -> None:
    """Send each connection its message, then read every reply (pipelined across connections)."""
    for index, sock in enumerate(sockets):
        sock.sendall(message(index))
    for sock in sockets:
        buffer = b""
        while not buffer.endswith(reply_end):
            buffer += sock.recv(4096)


def traffic(port: int, count: int) -> list[socket.socket]:
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    exchange(sockets, lambda i: b"set key:%d 0 0 4\r\nabcd\r\nget key:%d\r\n" % (i, i), b"END\r\n")
    exchange(sockets, lambda i: b"get key:%d\r\n" % i, b"END\r\n")
    return sockets


def measure(command: list[str], ready: bytes, port: int, count: int) -> tuple[float, subprocess.Popen[bytes]]:
    """Peak RSS (MiB) of `command` while `count` connections talk and stay open; the stopped process."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    line = process.stderr.readline()
    if ready not in line:
        process.kill()
        raise SystemExit(f"{command[0]} did not start: {line.decode()}{process.stderr.read().decode()}")
    sockets = traffic(port, count)
    time.sleep(0.5)  # let the capture drain what the traffic left in its buffers
    peak = peak_rss_mib(process.pid)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    for sock in sockets:
        sock.close()
    return peak, process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    args = parser.parse_args()
    wanted = args.connections + 100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < wanted:
        raise SystemExit(f"needs {wanted} open files (ulimit -n), the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    server, port = start_memcached(None, "-c", str(args.connections + 100))
    try:
        with tempfile.TemporaryDirectory() as scratch:
            profile = Path(scratch) / "p.profile"
            record = [sys.executable, "-m", "membench", "record", "ebpf:any", str(profile), "--port", str(port),
                      "--quiet", "--force"]
            few, _ = measure(record, b"recording", port, 10)
            many, _ = measure(record, b"recording", port, args.connections)
            operations = json.loads((profile / "_profile.json").read_text())["operations"]
            dump, _ = measure(["tcpdump", "-i", "lo", "-s", "0", "-w", str(Path(scratch) / "d.pcap"),
                               f"tcp port {port}"], b"listening", port, args.connections)
    finally:
        server.terminate()
        server.wait()
    per_connection_kib = (many - few) * 1024 / (args.connections - 10)
    print(f"membench record ebpf:any peak RSS: {few:.0f} MiB with 10 connections, {many:.0f} MiB with "
          f"{args.connections:,} ({per_connection_kib:.1f} KiB per connection; {operations:,} operations recorded, "
          f"{3 * args.connections:,} sent)")
    print(f"tcpdump -w peak RSS with {args.connections:,} connections: {dump:.0f} MiB; "
          f"ratio membench / tcpdump: {many / dump:.1f}x")


if __name__ == "__main__":
    main()
