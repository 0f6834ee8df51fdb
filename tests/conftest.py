"""Shared fixtures: a real memcached per test, the public capture corpus, and the membench CLI."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
# Public captures with their licences and provenance, inside the repository so a clone tests on its own.
PCAP_CORPUS = REPO / "tests" / "data" / "pcap"


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

    def __enter__(self) -> Memcached:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


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
    with start_memcached() as server:
        yield server


@pytest.fixture
def memcached_udp() -> Iterator[Memcached]:
    with start_memcached(udp=True) as server:
        yield server


def run_membench(*args: str, timeout: float = 120, check: bool = False, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI the way a user does, capturing its output."""
    proc = subprocess.run([sys.executable, "-m", "membench", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"membench {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def is_root() -> bool:
    return os.geteuid() == 0


def require_ebpf() -> None:
    """Skip where the machine really lacks eBPF; fail instead when MEMBENCH_REQUIRE_EBPF=1 (CI)."""
    reason = None
    if not is_root():
        reason = "eBPF capture needs root"
    elif not Path("/sys/kernel/btf/vmlinux").exists():
        reason = "the kernel has no BTF (/sys/kernel/btf/vmlinux)"
    if reason is not None:
        if os.environ.get("MEMBENCH_REQUIRE_EBPF") == "1":
            pytest.fail(f"eBPF is required here but unavailable: {reason}")
        pytest.skip(reason)


def read_profile(path: Path) -> pa.Table:
    """All rows of a profile, read with plain pyarrow (no membench code), in timestamp order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(path.glob("*.parquet"))
    assert parts, f"no Parquet part in {path}"
    return pa.concat_tables(pq.read_table(p) for p in parts).sort_by([("timestamp_ns", "ascending")])


RETRIEVALS = ("get", "gets")
STORAGE = ("set", "add", "replace", "append", "prepend", "cas")
STAT_NAMES = ("cmd_get", "get_hits", "get_misses", "cmd_set", "delete_hits", "delete_misses", "incr_hits",
              "incr_misses", "decr_hits", "decr_misses", "cas_hits", "cas_badval", "cas_misses", "cmd_touch",
              "touch_hits", "touch_misses")
# What memcached counts for each meta command, by the classic command with the same effect (the profile's
# `effect` column, schema 2; older profiles have none and count as the plain command).
_META_EFFECT = {"mg": "get", "ms": "set", "md": "delete", "ma": "incr"}


def profile_counters(table: pa.Table) -> dict[str, int]:
    """What memcached's `stats` counters should have moved by, according to a profile."""
    counts = {name: 0 for name in STAT_NAMES}
    names = ["command", "status", "key_hash", *(c for c in ("effect", "initial") if c in table.column_names)]
    seen: set[int] = set()
    for row in table.select(names).to_pylist():
        command, status = row["command"], row["status"]
        effect = row.get("effect") or _META_EFFECT.get(command, command)
        first_sight = row["key_hash"] not in seen
        seen.add(row["key_hash"])
        if row.get("initial") is not None and status == "ok" and first_sight:
            # A counter that can create its key answers alike whether it did or not; a key the profile has not
            # seen before is taken as created (memcached counts nothing then), as a replay's warm-up takes it.
            continue
        if effect in ("gat", "gats") and not (command == "mg" and status == "miss"):
            counts["cmd_touch"] += 1  # a get-and-touch counts as a touch (an mg T miss as a get miss)
            counts["touch_hits" if status == "hit" else "touch_misses"] += status in ("hit", "miss")
        elif effect in RETRIEVALS or command == "mg":
            counts["cmd_get"] += 1
            counts["get_hits" if status == "hit" else "get_misses"] += status in ("hit", "miss")
        elif effect in STORAGE:
            counts["cmd_set"] += 1
            if effect == "cas":
                counts[{"stored": "cas_hits", "exists": "cas_badval", "not_found": "cas_misses"}[status]] += 1
        elif effect == "delete":
            counts["delete_hits" if status == "deleted" else "delete_misses"] += status in ("deleted", "not_found")
        elif effect in ("incr", "decr"):
            counts[f"{effect}_hits" if status == "ok" else f"{effect}_misses"] += status in ("ok", "not_found")
        elif effect == "touch":
            counts["cmd_touch"] += 1
            counts["touch_hits" if status == "touched" else "touch_misses"] += 1
    return counts


def stats_delta(before: dict[str, int | str], after: dict[str, int | str]) -> dict[str, int]:
    return {name: int(after[name]) - int(before[name]) for name in STAT_NAMES}


class Tcpdump:
    """tcpdump writing a pcap of one port on loopback; `stop()` returns the kernel's drop count."""

    def __init__(self, path: Path, port: int, extra_filter: str = "") -> None:
        binary = shutil.which("tcpdump")
        if binary is None:
            pytest.fail("tcpdump is not installed: run scripts/setup.sh")
        expression = f"port {port}" + (f" and ({extra_filter})" if extra_filter else "")
        # Immediate mode and a large buffer: otherwise loopback bursts overflow it, and the packets still in an
        # unfinished TPACKET block are lost when tcpdump stops.
        command = [binary, "-i", "lo", "-B", "131072", "--immediate-mode", "-U", "-s", "0", "-w", str(path), expression]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        line = self.process.stderr.readline()  # "listening on lo ..." once the capture is live
        assert "listening" in line, line

    def stop(self) -> int:
        time.sleep(0.2)  # let the last packets reach the capture buffer
        self.process.send_signal(2)
        _, err = self.process.communicate(timeout=10)
        for line in err.splitlines():
            if "dropped by kernel" in line:
                return int(line.split()[0])
        return 0


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` (mount's syntax: "1m", "64k") at `directory`/disk, for disk-full faults; needs root."""
    if not is_root():
        pytest.skip("mounting a tmpfs needs root")
    mount = directory / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Takes every byte `disk` has, but `leave`: writes until the filesystem refuses."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"x" * 4096)
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
