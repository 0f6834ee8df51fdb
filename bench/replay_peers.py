"""The peers of bench/replay_rate.py, each doing the operations membench replays there: memtier_benchmark and
memaslap (C, run as processes), a naive asyncio-streams client, and the floor (a bare uvloop protocol with no
parsing or accounting), with the workload they share."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import uvloop

CONNECTIONS = 50
KEYS = 10_000
KEY_LENGTH = 30
VALUE_LENGTH = 100
SET_EVERY = 11  # 1 set : 10 gets


class Figures(NamedTuple):
    """One tool's run: its rate and client CPU per operation, whole and the kernel's part."""

    ops_per_s: float
    cpu_us_per_op: float
    system_us_per_op: float


# memtier names its keys prefix + number: 25 + 5 characters make the same 30-byte keys, 10,000 of them.
MEMTIER_PREFIX, MEMTIER_FIRST_KEY = "memtier:key:for:the:peer:", 10_000


def memtier_binary() -> str | None:
    """memtier_benchmark is not packaged in Debian: it is measured when the user built it (on PATH, or named by
    $MEMTIER_BENCHMARK)."""
    return os.environ.get("MEMTIER_BENCHMARK") or shutil.which("memtier_benchmark")


def run_memtier(port: int, depth: int, seconds: int) -> Figures | None:
    binary = memtier_binary()
    if binary is None:
        return None
    preload(port, [f"{MEMTIER_PREFIX}{key}".encode() for key in range(MEMTIER_FIRST_KEY, MEMTIER_FIRST_KEY + KEYS)])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([binary, "-s", "127.0.0.1", "-p", str(port), "-P", "memcache_text", "-t", "1",
                           "-c", str(CONNECTIONS), f"--pipeline={depth}", f"--ratio=1:{SET_EVERY - 1}",
                           "-d", str(VALUE_LENGTH), f"--key-prefix={MEMTIER_PREFIX}",
                           f"--key-minimum={MEMTIER_FIRST_KEY}", f"--key-maximum={MEMTIER_FIRST_KEY + KEYS - 1}",
                           "--key-pattern=R:R", f"--test-time={seconds}", "--hide-histogram"],
                          capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"^Totals\s+([\d.]+)", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
        return None
    rate = float(match.group(1))
    ops = rate * seconds
    system = after.ru_stime - before.ru_stime
    cpu = after.ru_utime - before.ru_utime + system
    return Figures(rate, cpu * 1e6 / ops, system * 1e6 / ops)


def run_memaslap(port: int, seconds: int) -> Figures | None:
    binary = shutil.which("memcaslap") or shutil.which("memaslap")
    if binary is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as config:
        # key length, value length and command mix (0 = set, 1 = get) as proportions.
        config.write(f"key\n{KEY_LENGTH} {KEY_LENGTH} 1\nvalue\n{VALUE_LENGTH} {VALUE_LENGTH} 1\n"
                     f"cmd\n0 {1 / SET_EVERY:.4f}\n1 {1 - 1 / SET_EVERY:.4f}\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([binary, "-s", f"127.0.0.1:{port}", "-c", str(CONNECTIONS), "-T", "1", "-t", f"{seconds}s",
                           "-F", config.name], capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    Path(config.name).unlink()
    match = re.search(r"Run time: [\d.]+s Ops: (\d+) TPS: (\d+)", proc.stdout)
    if match is None:
        print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
        return None
    ops, tps = int(match.group(1)), int(match.group(2))
    system = after.ru_stime - before.ru_stime
    cpu = after.ru_utime - before.ru_utime + system
    return Figures(float(tps), cpu * 1e6 / ops, system * 1e6 / ops)


async def _naive_connection(port: int, depth: int, deadline: float, counter: list[int], seed: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rng = np.random.default_rng(seed)
    value = b"0" * VALUE_LENGTH
    keys = [b"naive:%026d" % k for k in range(KEYS)]
    while time.monotonic() < deadline:
        picks = rng.integers(0, KEYS, depth)
        kinds = rng.integers(0, SET_EVERY, depth)
        for key, kind in zip(picks, kinds, strict=True):
            if kind == 0:
                writer.write(b"set %s 0 0 %d\r\n%s\r\n" % (keys[key], VALUE_LENGTH, value))
            else:
                writer.write(b"get %s\r\n" % keys[key])
        await writer.drain()
        for kind in kinds:
            if kind == 0:
                await reader.readuntil(b"\r\n")
            else:
                line = await reader.readuntil(b"\r\n")
                if line.startswith(b"VALUE"):
                    await reader.readexactly(int(line.split()[3]) + 2)
                    await reader.readuntil(b"\r\n")
        counter[0] += depth
    writer.close()


def run_naive(port: int, depth: int, seconds: float) -> Figures:
    counter = [0]

    async def main() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(_naive_connection(port, depth, deadline, counter, seed)
                               for seed in range(CONNECTIONS)))

    return _measured(lambda: asyncio.run(main()), counter)


def _measured(run: Callable[[], object], counter: list[int]) -> Figures:
    """Rate and CPU per operation of `run`, which counts its operations in counter[0]."""
    before, start = os.times(), time.monotonic()
    run()
    elapsed, after = time.monotonic() - start, os.times()
    system = after.system - before.system
    cpu = after.user - before.user + system
    return Figures(counter[0] / elapsed, cpu * 1e6 / counter[0], system * 1e6 / counter[0])


BARE_KEYS = [b"bare:%025d" % key for key in range(KEYS)]


class _BareConnection(asyncio.Protocol):
    """One connection of the floor client: `depth` requests in flight, replies counted by their last line, no
    parsing and no accounting. What it spends per operation is the least any client on uvloop can."""

    def __init__(self, requests: list[bytes], depth: int, counter: list[int], stopped: list[bool]) -> None:
        self._requests = requests
        self._next = 0
        self._depth = depth
        self._counter = counter
        self._stopped = stopped
        self._unfinished = b""  # the bytes after the last whole line read
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._send(self._depth)

    def data_received(self, data: bytes) -> None:
        if self._unfinished:
            data, self._unfinished = self._unfinished + data, b""
        if not data.endswith(b"\r\n"):
            end = data.rfind(b"\r\n")
            cut = end + 2 if end >= 0 else 0
            data, self._unfinished = data[:cut], data[cut:]
        done = data.count(b"END\r\n") + data.count(b"STORED\r\n")
        self._counter[0] += done
        if done and not self._stopped[0]:
            self._send(done)

    def _send(self, count: int) -> None:
        assert self._transport is not None
        first = self._next
        self._next = (first + count) % len(self._requests)
        if count == 1:
            self._transport.write(self._requests[first])
        elif first + count <= len(self._requests):
            self._transport.write(b"".join(self._requests[first : first + count]))
        else:
            self._transport.write(b"".join(self._requests[first:] + self._requests[: self._next]))


def _bare_requests(seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    value = b"0" * VALUE_LENGTH
    return [b"set %s 0 0 %d\r\n%s\r\n" % (BARE_KEYS[key], VALUE_LENGTH, value) if kind == 0
            else b"get %s\r\n" % BARE_KEYS[key]
            for key, kind in zip(rng.integers(0, KEYS, 4096), rng.integers(0, SET_EVERY, 4096), strict=True)]


def preload(port: int, keys: list[bytes]) -> None:
    """Store every key (a client's gets are then all hits, as membench's are after its warm-up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key, VALUE_LENGTH, b"0" * VALUE_LENGTH)
                              for key in keys) + b"mn\r\n")
        answer = b""
        while not answer.endswith(b"MN\r\n"):
            answer += sock.recv(65536)


def run_bare(port: int, depth: int, seconds: float) -> Figures:
    """The floor: a bare uvloop protocol per connection doing the same operations (keys preloaded, all hits)."""
    preload(port, BARE_KEYS)
    counter, stopped = [0], [False]
    requests = [_bare_requests(seed) for seed in range(CONNECTIONS)]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transports = [(await loop.create_connection(
            lambda mine=mine: _BareConnection(mine, depth, counter, stopped), "127.0.0.1", port))[0]
            for mine in requests]
        await asyncio.sleep(seconds)
        stopped[0] = True
        for transport in transports:
            transport.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return _measured(lambda: runner.run(main()), counter)


