"""`membench replay --cluster` on a real two-node Ray cluster on this machine (`ray start --head` plus a second
`ray start --address`, one CPU each) against real memcached: the same counts as a local replay, from both nodes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.local_ray import ray_nodes
from tests.conftest import free_port, run_membench, start_memcached, stats_delta
from tests.replay.profiles import mixed_profile, write_profile

_COUNTERS = ("cmd_get", "cmd_set", "get_hits", "get_misses", "delete_hits", "delete_misses", "incr_hits",
             "incr_misses", "touch_hits", "touch_misses")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """Two Ray nodes on loopback, one CPU each; yields the Ray Client address of the head."""
    with ray_nodes(nodes=2, cpus=1) as (address, _):
        yield address


def _replay(profile: Path, tmp_path: Path, name: str, *extra: str) -> tuple[dict, dict[str, int]]:
    server = start_memcached()
    try:
        before = server.stats()
        result = tmp_path / f"{name}.json"
        done = run_membench("replay", str(profile), "--target", server.address, "--json", str(result),
                            "--no-progress", *extra, timeout=240)
        assert done.returncode == 0, done.stderr
        return json.loads(result.read_text()), stats_delta(before, server.stats())
    finally:
        server.stop()


def test_a_cluster_replay_counts_as_a_local_one_from_both_nodes(ray_cluster: str, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "mixed.profile", mixed_profile("text", connections=6).operations)
    local, local_server = _replay(profile, tmp_path, "local")
    cluster, cluster_server = _replay(profile, tmp_path, "cluster", "--cluster", ray_cluster)
    assert cluster["cluster"]["nodes"] == 2 and cluster["cluster"]["actors"] == 2
    assert cluster["cluster"]["start_skew_ms"] >= 0
    # Ray starts its workers at niceness 15; as root the actors' replays run at 0 again, like any other process.
    assert cluster["cluster"]["niceness"] == (0 if os.geteuid() == 0 else 15)
    assert {name: command["statuses"] for name, command in cluster["commands"].items()} == {
        name: command["statuses"] for name, command in local["commands"].items()}
    assert cluster["ops"] == local["ops"] and cluster["failures"] == 0
    assert {name: cluster_server[name] for name in _COUNTERS} == {name: local_server[name] for name in _COUNTERS}


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="hiding the profile from the nodes takes a private mount namespace: root and unshare(1)")
def test_a_profile_only_the_driver_has_is_shipped_to_the_nodes(ray_cluster: str, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "mixed.profile", mixed_profile("text", connections=6).operations)
    local, local_server = _replay(profile, tmp_path, "local")
    # The driver runs in a mount namespace of its own, with the profile on a tmpfs there: the nodes' actors (and
    # this test) see an empty directory at its path, as a load machine without the file would.
    hidden = tmp_path / "driver-only"
    hidden.mkdir()
    out = tmp_path / "shipped.json"
    server = start_memcached()
    try:
        before = server.stats()
        script = (f"mount -t tmpfs none {hidden} && cp -r {profile} {hidden}/ && exec {sys.executable} -m membench "
                  f"replay {hidden}/mixed.profile --target {server.address} --cluster {ray_cluster} --json {out} "
                  "--no-progress")
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=240)
        delta = stats_delta(before, server.stats())
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    assert not (hidden / "mixed.profile").exists()
    shipped = json.loads(out.read_text())
    assert shipped["cluster"]["nodes"] == 2 and shipped["ops"] == local["ops"]
    assert {name: delta[name] for name in _COUNTERS} == {name: local_server[name] for name in _COUNTERS}
    assert not list(Path(tempfile.gettempdir()).glob("membench-profile-*")), "the nodes' copies are removed"


def test_an_unreachable_cluster_is_a_one_line_error(tmp_path: Path) -> None:
    server = start_memcached()
    try:
        profile = write_profile(tmp_path / "mixed.profile", mixed_profile("text").operations)
        done = run_membench("replay", str(profile), "--target", server.address, "--cluster",
                            f"ray://127.0.0.1:{free_port()}", "--no-progress")
    finally:
        server.stop()
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"membench: cannot connect to the Ray cluster at "
                                                f"{done.args[-2]}: Connection refused"]


def test_ctrl_c_stops_every_actor_and_the_result_is_still_written(ray_cluster: str, tmp_path: Path) -> None:
    server = start_memcached()
    try:
        profile = write_profile(tmp_path / "mixed.profile", mixed_profile("text", connections=6).operations)
        out = tmp_path / "result.json"
        proc = subprocess.Popen([sys.executable, "-m", "membench", "replay", str(profile), "--target",
                                 server.address, "--cluster", ray_cluster, "--loop", "forever", "--no-progress",
                                 "--json", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while int(server.stats()["cmd_get"]) < 2000 and time.monotonic() < deadline:  # both actors are replaying
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 1, stderr  # interrupted: not a complete measurement
    data = json.loads(out.read_text())
    assert data["interrupted"] is True and data["ops"] > 0 and data["cluster"]["actors"] == 2
    assert "Traceback" not in stderr
