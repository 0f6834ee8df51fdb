"""Shared fixtures: a real memcached per test, the public capture corpus, and the membench CLI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("MEMBENCH_CORPUS", REPO.parent / "shared" / "corpus"))
PCAP_CORPUS = CORPUS / "pcap"


def free_port() -> int:
    """A TCP port that is free now on loopback (and, by the kernel's allocation, very likely for UDP too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Memcached:
    """A memcached process this test owns."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    udp_port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stats(self) -> dict[str, int | str]:
        """memcached's own counters, read over a fresh raw connection (which itself counts one connection)."""
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            sock.sendall(b"stats\r\n")
            buf = b""
            while not buf.endswith(b"END\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("memcached closed the stats connection")
                buf += chunk
        out: dict[str, int | str] = {}
        for line in buf.decode().splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0] == "STAT":
                value = parts[2]
                out[parts[1]] = int(value) if value.isdigit() else value
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_memcached(port: int | None = None, udp: bool = False, extra: tuple[str, ...] = ()) -> Memcached:
    binary = shutil.which("memcached")
    if binary is None:
        pytest.fail("memcached is not installed: run scripts/setup.sh")
    port = port or free_port()
    udp_port = free_port() if udp else 0
    cmd = [binary, "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", str(udp_port), "-m", "256",
           "-I", "2m", "-t", "2", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"memcached exited at start: {err.strip()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return Memcached(proc, "127.0.0.1", port, udp_port)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("memcached did not start listening within 10 s")


@pytest.fixture
def memcached() -> Iterator[Memcached]:
    server = start_memcached()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def memcached_udp() -> Iterator[Memcached]:
    server = start_memcached(udp=True)
    try:
        yield server
    finally:
        server.stop()


def run_membench(*args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI the way a user does, capturing its output."""
    proc = subprocess.run([sys.executable, "-m", "membench", *args], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"membench {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def is_root() -> bool:
    return os.geteuid() == 0
