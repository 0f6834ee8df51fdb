"""What `membench record` tells the user: a live status line while it runs, a summary when it ends."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from membench.record.recorder import Progress, RecordSummary


class StatusLine:
    """Rewrites one terminal line each second: operations/s, connections, bytes, drops."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._last_ops = 0
        self._last_elapsed = 0.0

    def __call__(self, progress: Progress) -> None:
        interval = progress.elapsed_s - self._last_elapsed
        if interval < 0.9:
            return
        rate = (progress.operations - self._last_ops) / interval
        self._last_ops, self._last_elapsed = progress.operations, progress.elapsed_s
        line = (f"{progress.elapsed_s:7.1f}s  {rate:10,.0f} ops/s  {progress.operations:12,} ops  "
                f"{progress.connections_open:5} conns open ({progress.connections_total} seen)  "
                f"{_bytes(progress.bytes_seen):>9}  drops {progress.dropped_events:,}")
        self._console.file.write("\r" + line[: self._console.width - 1])
        self._console.file.flush()

    def clear(self) -> None:
        self._console.file.write("\r" + " " * (self._console.width - 1) + "\r")
        self._console.file.flush()


def print_summary(console: Console, output: Path, summary: RecordSummary) -> None:
    capture = summary.health.get("capture", {})
    parser = summary.health.get("parser", {})
    pairing = summary.health.get("pairing", {})
    console.print(f"recorded {summary.operations:,} operations on {summary.connections:,} connections "
                  f"in {summary.duration_s:.1f}s -> {output}", markup=False)
    lost = {
        "bytes missing (holes)": capture.get("bytes_missing", 0),
        "holes": capture.get("holes", 0),
        "events dropped": capture.get("dropped_events", 0),
        "malformed packets": capture.get("malformed_packets", 0),
        "bytes skipped by the parser": parser.get("request_bytes_skipped", 0) + parser.get("response_bytes_skipped", 0),
        "requests never answered": pairing.get("unanswered_requests", 0),
        "replies without a request": pairing.get("unmatched_responses", 0),
    }
    seen = f"captured {_bytes(capture.get('bytes_seen', 0))}"
    if any(lost.values()):
        details = ", ".join(f"{name} {count:,}" for name, count in lost.items() if count)
        console.print(f"{seen}; lost: {details}", markup=False)
    else:
        console.print(f"{seen}; nothing lost", markup=False)


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
