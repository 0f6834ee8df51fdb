"""The one live status line of membench's long commands (record, replay): rewritten in place about once a second,
cut to the terminal's width, cleared when the command prints its result. Each command composes its own fields."""

from __future__ import annotations

from rich.console import Console

MIN_INTERVAL_S = 0.9


class StatusLine:
    def __init__(self, console: Console) -> None:
        self._console = console
        self._shown = False
        self._last_elapsed = 0.0
        self._last_count = 0

    def rate(self, elapsed_s: float, count: int) -> float | None:
        """Operations per second since the previous shown line, or None if it is too early to show another."""
        interval = elapsed_s - self._last_elapsed
        if interval < MIN_INTERVAL_S:
            return None
        rate = (count - self._last_count) / interval
        self._last_elapsed, self._last_count = elapsed_s, count
        return rate

    def show(self, text: str) -> None:
        self._console.file.write("\r" + text[: self._console.width - 1])
        self._console.file.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._console.file.write("\r" + " " * (self._console.width - 1) + "\r")
            self._console.file.flush()
            self._shown = False
