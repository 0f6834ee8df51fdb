"""`replay --workers N` under real faults: a worker killed mid-run, and the parent killed under its workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.replay.profiles import mixed_profile, write_profile


def start_replay(profile: Path, target: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "membench", "replay", str(profile), "--target", target,
                             "--loop", "forever", "--workers", "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def workers_replaying(proc: subprocess.Popen[str]) -> list[int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(0.5)
        workers = children(proc.pid)
        if len(workers) == 2:
            time.sleep(2.0)  # past the barrier: both are replaying
            return workers
    raise AssertionError(f"the replay never had its 2 workers: {children(proc.pid)}")


def test_a_killed_worker_leaves_the_others_results_kept_and_the_replay_not_completed(memcached, tmp_path):
    """The old code waited for every worker to report: the survivor replayed on forever, and had it ended, its
    results were discarded with "a replay worker died without reporting"."""
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    out = tmp_path / "r.json"
    proc = start_replay(profile, memcached.address, "--json", str(out))
    try:
        victim = workers_replaying(proc)[0]
        os.kill(victim, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    result = json.loads(out.read_text())
    assert result["completed"] is False and result["interrupted"] is True
    assert result["ops"] >= len(mixed_profile("text").operations) and result["errors"] == {}
    died = [warning for warning in result["warnings"] if "was killed by SIGKILL" in warning]
    assert len(died) == 1 and died[0].startswith("replay worker "), result["warnings"]
    assert "was killed by SIGKILL" in stderr  # the table's warnings


def test_workers_end_with_their_parent(memcached, tmp_path):
    """Nobody is left to read a worker's result once its parent is killed: it must stop, not replay forever."""
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    proc = start_replay(profile, memcached.address)
    workers: list[int] = []
    try:
        workers = workers_replaying(proc)
        proc.kill()
        proc.wait(timeout=10)  # not communicate(): orphaned workers would hold its pipes open
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(running(pid) for pid in workers), "workers replay on after their parent was killed"
    finally:
        proc.kill()
        for pid in workers:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
