"""Nothing of a capture outlives its process: no program, link or map after a clean exit or after SIGKILL."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Memcached, require_ebpf
from tests.ebpf.ebpf_support import RawClient

pytestmark = pytest.mark.ebpf


def bpf_objects_held_by(pid: int) -> tuple[set[int], set[int]]:
    """Program and map ids behind the fds of a process (from /proc/PID/fdinfo)."""
    programs, maps = set(), set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue  # the fd was closed while we listed the directory
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key == "prog_id":
                programs.add(int(value))
            elif key == "map_id":
                maps.add(int(value))
    return programs, maps


def programs_in_object() -> int:
    from membench.capture.ebpf.libbpf import BpfObject
    from membench.capture.ebpf.source import OBJECT_PATH

    opened = BpfObject(OBJECT_PATH)
    try:
        return sum(1 for _ in opened.programs())
    finally:
        opened.close()


def loaded_ids(kind: str) -> set[int]:
    bpftool = shutil.which("bpftool")
    if bpftool is None:
        pytest.fail("bpftool is not installed: run scripts/setup.sh")
    listing = subprocess.run([bpftool, "-j", kind, "list"], check=True, capture_output=True, text=True).stdout
    return {entry["id"] for entry in json.loads(listing or "[]")}


def assert_released(programs: set[int], maps: set[int]) -> None:
    # The kernel frees programs and maps after an RCU grace period, shortly after the last fd closes.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not programs & loaded_ids("prog") and not maps & loaded_ids("map"):
            return
        time.sleep(0.1)
    assert programs & loaded_ids("prog") == set(), "programs still loaded"
    assert maps & loaded_ids("map") == set(), "maps still loaded"


def start_recording(memcached: Memcached, out: Path, *extra: str) -> subprocess.Popen[str]:
    require_ebpf()
    process = subprocess.Popen(
        [sys.executable, "-m", "membench", "record", "ebpf:any", str(out), "--port", str(memcached.port),
         *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    line = process.stderr.readline()
    assert line.startswith("recording"), line + process.stderr.read()
    return process


def traffic(memcached: Memcached) -> None:
    client = RawClient(memcached.port)
    client.call(b"set life 0 0 4\r\ncycl\r\nget life\r\n", b"END\r\n")
    client.close()


def test_nothing_stays_attached_after_a_clean_exit(memcached: Memcached, tmp_path: Path) -> None:
    process = start_recording(memcached, tmp_path / "clean.profile", "--duration", "1.5")
    programs, maps = bpf_objects_held_by(process.pid)
    traffic(memcached)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err

    assert len(programs) == programs_in_object() and len(maps) >= 8
    assert_released(programs, maps)


def test_nothing_stays_attached_after_sigkill(memcached: Memcached, tmp_path: Path) -> None:
    process = start_recording(memcached, tmp_path / "killed.profile")
    programs, maps = bpf_objects_held_by(process.pid)
    traffic(memcached)
    assert programs <= loaded_ids("prog")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)

    assert len(programs) == programs_in_object() and len(maps) >= 8
    assert_released(programs, maps)


def test_missing_capabilities_is_a_one_line_error(tmp_path: Path) -> None:
    require_ebpf()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is not installed")
    # Still uid 0, but with an empty bounding set the new program has no capabilities at all.
    result = subprocess.run(
        [setpriv, "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-m", "membench", "record",
         "ebpf:any", str(tmp_path / "x.profile"), "--port", "11"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "membench: eBPF capture needs root (or CAP_BPF and CAP_PERFMON): run membench with sudo"]


def test_a_kernel_without_the_socket_tracepoints_is_a_one_line_error(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    require_ebpf()
    from membench.capture.ebpf import source
    from membench.errors import MembenchError

    older_kernel = tmp_path / "vmlinux"  # its BTF names two of the four tracepoints
    older_kernel.write_bytes(b"\0btf_trace_sock_recv_length\0btf_trace_inet_sock_set_state\0")
    monkeypatch.setattr(source, "KERNEL_BTF", older_kernel)
    with pytest.raises(MembenchError, match=r"^the kernel has no sock_send_length, tcp_destroy_sock tracepoint "):
        source.check_environment()
