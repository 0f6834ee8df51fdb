"""`membench top`'s I/O: a live capture recorded into a TopWindow instead of a profile, drawn every interval, with
one-key commands read from the terminal. Nothing is written to disk; real keys appear on screen only with
--show-keys (from the hasher's in-memory memo of hot keys) and are never written anywhere."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live

from membench.capture.stream import StreamSource
from membench.errors import MembenchError
from membench.record.anonymize import KeyHasher
from membench.record.recorder import Progress, Recorder
from membench.top.view import ViewState, next_connection_order, next_key_order, render
from membench.top.window import TopWindow


@dataclass(frozen=True, slots=True)
class TopOptions:
    interval_s: float = 1.0
    limit: int = 10
    show_keys: bool = False


def apply_key(state: ViewState, key: str) -> ViewState | None:
    """The view after a key press; None to quit."""
    if key in ("q", "Q", "\x03"):
        return None
    if key == "k":
        return dataclasses.replace(state, key_order=next_key_order(state.key_order))
    if key == "c":
        return dataclasses.replace(state, connection_order=next_connection_order(state.connection_order))
    return state


class _Capture:
    """The recorder on its own thread, and what it last reported."""

    def __init__(self, source: StreamSource, window: TopWindow, hasher: KeyHasher, *, remember_keys: bool) -> None:
        self.progress: Progress | None = None
        self.failure: MembenchError | None = None
        self.recorder = Recorder(source, window, hasher, on_progress=self._on_progress, remember_keys=remember_keys)
        self.thread = threading.Thread(target=self._run, name="membench-top-capture", daemon=True)

    def _on_progress(self, progress: Progress) -> None:
        self.progress = progress

    def _run(self) -> None:
        try:
            self.recorder.run()
        except MembenchError as error:
            self.failure = error

    def stop(self) -> None:
        self.recorder.stop()
        self.thread.join()
        if self.failure is not None:
            raise self.failure


def run_top(source: StreamSource, hasher: KeyHasher, options: TopOptions, console: Console) -> None:
    """Show the traffic until `q`, Ctrl+C, SIGTERM, or the source ends (--duration)."""
    window = TopWindow()
    capture = _Capture(source, window, hasher, remember_keys=options.show_keys)
    state = ViewState(source=source.name, show_keys=options.show_keys)
    capture.thread.start()
    try:
        with _keys_from_terminal() as keys, Live(console=console, screen=True, auto_refresh=False) as live:
            started = time.monotonic()
            while capture.thread.is_alive():
                state_after = _wait_for_keys(keys, state, started + options.interval_s)
                if state_after is None:
                    break
                state = state_after  # a key that changed the view ends the interval early: it shows at once
                now = time.monotonic()
                snapshot = window.snapshot(now - started, state.key_order, state.connection_order, options.limit)
                started = now
                real_keys = capture.recorder.keys_for(line.key_hash for line in snapshot.keys) \
                    if state.show_keys else {}
                progress = capture.progress
                live.update(render(snapshot, state, real_keys, 0 if progress is None else progress.dropped_events,
                                   0 if progress is None else progress.connections_open), refresh=True)
    finally:
        capture.stop()


def _wait_for_keys(keys: int | None, state: ViewState, deadline: float) -> ViewState | None:
    """Read keys until `deadline`; returns at the first key that changes the view (or quits)."""
    while (remaining := deadline - time.monotonic()) > 0:
        if keys is None:
            time.sleep(remaining)
            break
        ready, _, _ = select.select([keys], [], [], remaining)
        if not ready:
            break
        pressed = os.read(keys, 1).decode("ascii", "replace")
        if not pressed:  # the terminal went away
            return None
        after = apply_key(state, pressed)
        if after != state:
            return after
    return state


@contextlib.contextmanager
def _keys_from_terminal() -> Iterator[int | None]:
    """Standard input in cbreak mode (one key at a time, no echo), restored after; None when not a terminal."""
    if not sys.stdin.isatty():
        yield None
        return
    descriptor = sys.stdin.fileno()
    saved = termios.tcgetattr(descriptor)
    try:
        tty.setcbreak(descriptor)
        yield descriptor
    finally:
        termios.tcsetattr(descriptor, termios.TCSADRAIN, saved)
