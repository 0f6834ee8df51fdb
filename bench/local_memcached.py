"""What the benchmarks share: a memcached of their own on a free loopback port, and reading peers' output."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time


def require_tools(*tools: str) -> None:
    """Exit with one line naming the first tool that is missing."""
    for tool in tools:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: run scripts/setup.sh")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_memcached(port: int | None = None, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """memcached -t 2 on 127.0.0.1, returned once it accepts connections."""
    port = port or free_port()
    proc = subprocess.Popen(["memcached", "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "2",
                             "-m", "512", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("memcached did not start")


def number_in(pattern: str, text: str) -> int:
    """The integer a peer tool printed (thousands separators allowed); exit if it is not there."""
    match = re.search(pattern, text)
    if match is None:
        raise SystemExit(f"no {pattern!r} in the tool's output: {text.strip()[-300:]}")
    return int(match.group(1).replace(",", ""))
