"""A big profile replays as a stream: it starts sending at once and its memory stays bounded."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from membench.profile.metadata import ProfileMetadata
from membench.profile.schema import SCHEMA
from membench.profile.writer import ProfileWriter
from tests.replay.profiles import T0

ROWS = 2_000_000
KEYS = 50_000
CONNECTIONS = 20
CHUNK = 500_000
# Python, numpy and pyarrow alone take about 100 MB; the whole plan of 2M operations held at once took GBs.
RSS_BOUND_KB = 400 * 1024
FIRST_REQUEST_WITHIN_S = 8.0  # survey and warm-up of 2M rows included, on a loaded 2-core machine


def write_big_profile(path: Path) -> None:
    rng = np.random.default_rng(3)
    key_hashes = rng.integers(0, 2**63, KEYS, dtype=np.uint64)
    with ProfileWriter(path, ProfileMetadata(source="test:big")) as writer:
        for first in range(0, ROWS, CHUNK):
            index = np.arange(first, first + CHUNK)
            is_set = index % 10 == 0
            columns = {
                "timestamp_ns": pa.array(T0 + index * 10_000, pa.int64()),
                "connection": pa.array(index % CONNECTIONS, pa.uint32()),
                "command": pa.array(np.where(is_set, "set", "get")).dictionary_encode(),
                "protocol": pa.array(np.full(CHUNK, "text")).dictionary_encode(),
                "key_hash": pa.array(key_hashes[rng.integers(0, KEYS, CHUNK)], pa.uint64()),
                "key_length": pa.array(np.full(CHUNK, 24), pa.uint16()),
                "value_length": pa.array(np.full(CHUNK, 50), pa.uint32()),
                "flags": pa.array(np.zeros(CHUNK), pa.uint32()),
                "ttl": pa.array(np.zeros(CHUNK), pa.int64()),
                "status": pa.array(np.where(is_set, "stored", "miss")).dictionary_encode(),
                "latency_us": pa.array(np.full(CHUNK, 40), pa.uint32()),
                "batch": pa.array(index + 1, pa.uint64()),
                "quiet": pa.array(np.zeros(CHUNK, dtype=bool)),
            }
            arrays = [columns[field.name].cast(field.type) if field.name in columns else pa.nulls(CHUNK, field.type)
                      for field in SCHEMA]
            writer.write_batch(pa.Table.from_arrays(arrays, schema=SCHEMA))


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def test_big_profile_starts_at_once_with_bounded_memory(memcached, tmp_path):
    profile = tmp_path / "big.profile"
    write_big_profile(profile)
    out = tmp_path / "r.json"
    before = int(memcached.stats()["cmd_get"])
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "membench", "replay", str(profile), "--target",
                             memcached.address, "--pipeline", "8", "--json", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first_request_s = None
        while time.monotonic() - started < FIRST_REQUEST_WITHIN_S + 5 and proc.poll() is None:
            if int(memcached.stats()["cmd_get"]) > before:
                first_request_s = time.monotonic() - started
                break
            time.sleep(0.05)
        assert first_request_s is not None and first_request_s < FIRST_REQUEST_WITHIN_S, first_request_s
        time.sleep(3)  # replaying: the plan is made as the replay goes
        peak = peak_rss_kb(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    assert peak < RSS_BOUND_KB, f"peak RSS {peak // 1024} MiB"
    data = json.loads(out.read_text())
    assert data["interrupted"] is True and data["errors"] == {}
    assert 0 < data["ops"] < ROWS
    assert data["profile"]["rows"] == ROWS
