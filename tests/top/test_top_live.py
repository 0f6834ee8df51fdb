"""`membench top` for real: a live eBPF capture of real memcached traffic, in a real terminal (tmux), driven by
keys; it shows the traffic, sorts on request, shows real keys only when asked, quits, and writes nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymemcache.client.base import Client

from tests.conftest import Memcached, require_ebpf

pytestmark = pytest.mark.ebpf


class Terminal:
    """A tmux session running one command."""

    def __init__(self, name: str, command: list[str], cwd: Path) -> None:
        self.name = name
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "160", "-y", "50", "-c", str(cwd),
                        *command], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True,
                              check=False).stdout

    def press(self, key: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, key], check=True)

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True).returncode == 0

    def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def traffic(memcached: Memcached) -> Iterator[None]:
    """A hot key read over and over, and cold keys that miss, until the test ends."""
    stop = threading.Event()

    def load() -> None:
        client = Client(("127.0.0.1", memcached.port))
        client.set("hotkey", b"x" * 100)
        while not stop.is_set():
            for index in range(20):
                client.get("hotkey")
                client.get(f"cold{index}")

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


def top(tmp_path: Path, memcached: Memcached, *options: str) -> Terminal:
    require_ebpf()
    if shutil.which("tmux") is None:
        pytest.fail("tmux is missing: scripts/setup.sh installs it")
    command = [sys.executable, "-m", "membench", "top", "ebpf:any", "--port", str(memcached.port), *options]
    # The shell keeps the pane after membench ends, so the test can tell a clean exit from a crash.
    shell = " ".join(command) + "; echo membench-exited-$?; sleep 60"
    return Terminal(f"top-{memcached.port}", ["sh", "-c", shell], tmp_path)


def test_top_shows_live_traffic_sorts_on_keys_and_quits_writing_nothing(tmp_path: Path, memcached: Memcached,
                                                                           traffic: None) -> None:
    terminal = top(tmp_path, memcached)
    try:
        screen = terminal.wait_for("hit ratio 5")  # one hit for every miss
        header = screen.splitlines()[0]
        rate = int(header.split("ops/s")[0].split()[-1].replace(",", ""))
        assert rate > 100, header
        assert "hotkey" not in screen, "real keys only with --show-keys"
        assert "sorted by ops" in screen
        terminal.press("k")
        terminal.wait_for("hottest keys (per second, sorted by bytes)")
        terminal.press("c")
        terminal.wait_for("busiest connections (sorted by bytes)")
        terminal.press("q")
        terminal.wait_for("membench-exited-0")
    finally:
        terminal.close()
    assert list(tmp_path.iterdir()) == [], "top writes nothing to disk"


def test_top_shows_real_keys_only_when_asked(tmp_path: Path, memcached: Memcached, traffic: None) -> None:
    terminal = top(tmp_path, memcached, "--show-keys", "--duration", "30")
    try:
        screen = terminal.wait_for("hotkey")
        hot_line = next(line for line in screen.splitlines() if "hotkey" in line)
        assert "cold" in screen and hot_line.split("│")[1].strip() == "hotkey"
        terminal.press("q")
        terminal.wait_for("membench-exited-0")
    finally:
        terminal.close()
    assert list(tmp_path.iterdir()) == []
