"""`membench replay --cluster` on a real two-node Ray cluster on this machine (`ray start --head` plus a second
`ray start --address`, one CPU each) against real memcached: the same counts as a local replay, from both nodes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, run_membench, start_memcached, stats_delta
from tests.replay.profiles import mixed_profile, write_profile

_COUNTERS = ("cmd_get", "cmd_set", "get_hits", "get_misses", "delete_hits", "delete_misses", "incr_hits",
             "incr_misses", "touch_hits", "touch_misses")


def _ray(*args: str) -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


def _active_nodes(gcs: str) -> int:
    status = subprocess.run(_ray("status", f"--address={gcs}"), capture_output=True, text=True, timeout=30)
    active = status.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return active.count("node_")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """Two Ray nodes on loopback; yields the Ray Client address of the head."""
    gcs_port, client_port = free_port(), free_port()
    gcs = f"127.0.0.1:{gcs_port}"
    common = ["--num-cpus=1", "--object-store-memory=80000000", "--disable-usage-stats", "--block"]
    head = subprocess.Popen(_ray("start", "--head", f"--port={gcs_port}", f"--ray-client-server-port={client_port}",
                                 "--include-dashboard=false", "--min-worker-port=21000", "--max-worker-port=21099",
                                 *common), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes = [head]
    try:
        deadline = time.monotonic() + 90
        while _active_nodes(gcs) < 1 and time.monotonic() < deadline:
            time.sleep(1)
        nodes.append(subprocess.Popen(_ray("start", f"--address={gcs}", "--min-worker-port=21100",
                                           "--max-worker-port=21199", *common),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while _active_nodes(gcs) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert _active_nodes(gcs) == 2, "the local two-node Ray cluster did not come up"
        yield f"ray://127.0.0.1:{client_port}"
    finally:
        for node in reversed(nodes):
            node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()


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
    assert {name: command["statuses"] for name, command in cluster["commands"].items()} == {
        name: command["statuses"] for name, command in local["commands"].items()}
    assert cluster["ops"] == local["ops"] and cluster["failures"] == 0
    assert {name: cluster_server[name] for name in _COUNTERS} == {name: local_server[name] for name in _COUNTERS}


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
