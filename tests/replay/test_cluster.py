"""`membench replay --cluster` on a real two-node Ray cluster on this machine (`ray start --head` plus a second
`ray start --address`, one CPU each) against real memcached: the same counts as a local replay, from both nodes."""

from __future__ import annotations

import contextlib
import json
import os
import re
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
from tests.conftest import Memcached, free_port, run_membench, start_memcached, stats_delta
from tests.replay.profiles import mixed_profile, write_profile

_COUNTERS = ("cmd_get", "cmd_set", "get_hits", "get_misses", "delete_hits", "delete_misses", "incr_hits",
             "incr_misses", "touch_hits", "touch_misses")


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, str]]:
    """Two Ray nodes on loopback, one CPU each; yields the Ray Client address of the head and its GCS address."""
    with ray_nodes(nodes=2, cpus=1) as (address, _, gcs):
        yield address, gcs


@pytest.fixture(scope="module")
def ray_cluster(ray_head: tuple[str, str]) -> str:
    return ray_head[0]


def _replay(profile: Path, tmp_path: Path, name: str, *extra: str,
            env: dict[str, str] | None = None) -> tuple[dict, dict[str, int]]:
    server = start_memcached()
    try:
        before = server.stats()
        result = tmp_path / f"{name}.json"
        done = run_membench("replay", str(profile), "--target", server.address, "--json", str(result),
                            "--no-progress", *extra, timeout=240, env=env)
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


def _replaying_forever(server: Memcached, ray_cluster: str, tmp_path: Path, out: Path) -> subprocess.Popen[str]:
    """A cluster replay of a 6-connection profile, looping until stopped, once both actors are replaying."""
    profile = write_profile(tmp_path / "mixed.profile", mixed_profile("text", connections=6).operations)
    proc = subprocess.Popen([sys.executable, "-m", "membench", "replay", str(profile), "--target", server.address,
                             "--cluster", ray_cluster, "--loop", "forever", "--no-progress", "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while int(server.stats()["cmd_get"]) < 2000 and time.monotonic() < deadline:
        time.sleep(0.2)
    return proc


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_every_actor_and_the_result_is_still_written(ray_cluster: str, tmp_path: Path,
                                                                   stop: signal.Signals) -> None:
    """Ctrl+C, or a SIGTERM (a service manager's stop), which used to end a cluster replay with no result."""
    server = start_memcached()
    try:
        out = tmp_path / "result.json"
        proc = _replaying_forever(server, ray_cluster, tmp_path, out)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(stop)
        _, stderr = proc.communicate(timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 1, stderr  # interrupted: not a complete measurement
    data = json.loads(out.read_text())
    assert data["interrupted"] is True and data["ops"] > 0 and data["cluster"]["actors"] == 2
    assert "Traceback" not in stderr


def _recording_ray_start(tmp_path: Path, address: str) -> dict[str, str]:
    """An environment whose Ray temporary directory (RAY_TMPDIR) records `address` as `ray start --head` does, in
    tmp_path: the real record of this machine, maybe of the module's cluster, is left alone."""
    (tmp_path / "ray-tmp" / "ray").mkdir(parents=True)
    (tmp_path / "ray-tmp" / "ray" / "ray_current_cluster").write_text(f"{address}\n")
    environment = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    return environment | {"RAY_TMPDIR": str(tmp_path / "ray-tmp")}


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="hiding the running Ray clusters takes a private PID namespace: root and unshare(1)")
@pytest.mark.parametrize(("record", "said"), [
    ("127.0.0.1:{port}", r"cannot connect to the Ray cluster at \S+:{port} \(--cluster auto, from the last "
                         r"`ray start --head` on this machine\): Connection refused"),
    ("not an address", r"--cluster auto: the address `ray start --head` recorded on this machine is not one "
                       r"\(Invalid address format: not an address\)")], ids=["stopped-cluster", "damaged-record"])
def test_auto_with_a_record_of_no_running_cluster_fails_at_once(tmp_path: Path, record: str, said: str) -> None:
    """The record of `ray start --head` outlives its cluster, and ray.init retried the dead address for minutes."""
    port = free_port()  # nobody listens there: the cluster that recorded it is gone
    environment = _recording_ray_start(tmp_path, record.format(port=port))
    server = start_memcached()
    try:
        profile = write_profile(tmp_path / "mixed.profile", mixed_profile("text").operations)
        began = time.monotonic()
        # Ray's `auto` takes a head it sees running (by its processes) over the record: in a PID namespace with a
        # /proc of its own, neither the module's cluster nor anyone else's is seen, and the record is what counts.
        done = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable, "-m",
                               "membench", "replay", str(profile), "--target", server.address, "--cluster", "auto",
                               "--no-progress"], capture_output=True, text=True, timeout=60, env=environment)
        took = time.monotonic() - began
    finally:
        server.stop()
    assert done.returncode == 2 and took < 30, done.stderr
    # Ray names the local host by the machine's address, as ray.init would connect to it.
    (line,) = done.stderr.splitlines()
    assert re.fullmatch("membench: " + said.replace("{port}", str(port)), line), line


def test_auto_finds_a_running_cluster(ray_head: tuple[str, str], tmp_path: Path) -> None:
    """`auto` is now resolved and checked before ray.init; a cluster that runs is still found and used. Ray picks
    the one head it sees running, or, seeing several, the recorded one: here, both are the module's cluster."""
    _, gcs = ray_head
    profile = write_profile(tmp_path / "mixed.profile", mixed_profile("text", connections=6).operations)
    local, _ = _replay(profile, tmp_path, "local")
    auto, _ = _replay(profile, tmp_path, "auto", "--cluster", "auto", env=_recording_ray_start(tmp_path, gcs))
    assert auto["cluster"]["address"] == "auto" and auto["cluster"]["nodes"] == 2
    assert auto["ops"] == local["ops"] and auto["failures"] == 0


def _engine_processes() -> list[int]:
    """The replay processes the actors forked (an actor's engine runs in a child of it, titled as the actor)."""
    titled = set()
    for entry in Path("/proc").iterdir():  # read here rather than with pgrep, which setup.sh does not install
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and b"ray::ReplayShard" in (entry / "cmdline").read_bytes():
                titled.add(int(entry.name))
    parents = {pid: int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) for pid in titled
               if Path(f"/proc/{pid}/stat").exists()}
    return sorted(pid for pid, parent in parents.items() if parent in titled)


def test_a_killed_replay_process_leaves_the_other_actors_results_kept(ray_cluster: str, tmp_path: Path) -> None:
    """A real fault (the OOM killer, say) in one actor's engine: the other actor is stopped and what both did before
    is the result, said to be partial. The old code waited for the survivor, which replays forever here, and then
    lost every result to the one error."""
    server = start_memcached()
    try:
        out = tmp_path / "result.json"
        proc = _replaying_forever(server, ray_cluster, tmp_path, out)
        engines = _engine_processes()
        assert len(engines) == 2 and proc.poll() is None, (engines, proc.poll())
        os.kill(engines[0], signal.SIGKILL)
        try:
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    finally:
        server.stop()
    assert proc.returncode == 1, stderr
    data = json.loads(out.read_text())
    assert data["completed"] is False and data["interrupted"] is True and data["ops"] > 0
    (missing,) = [warning for warning in data["warnings"] if "gave no result" in warning]
    assert re.fullmatch(r"replay actor [12] of 2 gave no result \(its replay process was killed by SIGKILL\): its "
                        r"connections' operations are missing from the result", missing), missing
    assert "Traceback" not in stderr
