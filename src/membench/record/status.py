"""What `membench record` tells the user: a live status line while it runs, a summary when it ends."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from membench.profile.health import bytes_missing_in_values
from membench.profile.health import losses as profile_losses
from membench.record.recorder import Progress, RecordSummary
from membench.status_line import StatusLine


class RecordStatus:
    """`membench record`'s live line: operations/s, connections, bytes, drops."""

    def __init__(self, console: Console) -> None:
        self._line = StatusLine(console)

    def __call__(self, progress: Progress) -> None:
        rate = self._line.rate(progress.elapsed_s, progress.operations)
        if rate is None:
            return
        self._line.show(f"{progress.elapsed_s:7.1f}s  {rate:10,.0f} ops/s  {progress.operations:12,} ops  "
                        f"{progress.connections_open:5} conns open ({progress.connections_total} seen)  "
                        f"{_bytes(progress.bytes_seen):>9}  drops {progress.dropped_events:,}")

    def clear(self) -> None:
        self._line.clear()


# Readable names for the losses a user meets most; the others are shown by their counter name.
_LOSS_NAMES: dict[tuple[str, str], str] = {
    ("capture", "bytes_missing"): "bytes missing (holes)",
    ("capture", "holes"): "holes",
    ("capture", "dropped_events"): "events dropped",
    ("capture", "malformed_packets"): "malformed packets",
    ("capture", "truncated_file"): "the capture file is truncated",
    ("capture", "stopped_before_end"): "the capture file was not read to its end",
    ("parser", "request_bytes_skipped"): "request bytes skipped by the parser",
    ("parser", "response_bytes_skipped"): "reply bytes skipped by the parser",
    ("pairing", "unanswered_requests"): "requests never answered",
    ("pairing", "unmatched_responses"): "replies without a request",
    ("pairing", "values_out_of_range"): "values beyond the profile's columns (clamped or null)",
    ("writer", "rows_rejected"): "operations the profile could not hold",
    ("writer", "parts_not_written"): "profile parts the disk refused (the operations after them are missing)",
}
def losses(health: dict[str, dict[str, int]]) -> list[tuple[str, int]]:
    """(what, how many) for every non-zero loss counter of a profile's health, named for a reader."""
    return [(_LOSS_NAMES.get(counter, " ".join(counter)), count) for counter, count in profile_losses(health).items()]


def print_summary(console: Console, output: Path, summary: RecordSummary) -> None:
    capture = summary.health.get("capture", {})
    console.print(f"recorded {summary.operations:,} operations on {summary.connections:,} connections "
                  f"in {summary.duration_s:.1f}s -> {output}", markup=False)
    seen = f"captured {_bytes(capture.get('bytes_seen', 0))}"
    lost = losses(summary.health)
    if lost:
        details = ", ".join(f"{name} {count:,}" for name, count in lost)
        console.print(f"{seen}; lost: {details}", markup=False)
    else:
        console.print(f"{seen}; nothing lost", markup=False)
    uncopied = bytes_missing_in_values(summary.health)
    if uncopied:
        console.print(f"({_bytes(uncopied)} of value bytes were not captured, but the values' lengths were: their "
                      "rows are whole)", markup=False)


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def explain_capture(console: Console, capture: dict[str, int], source: str, port_list: str) -> None:
    """What a user would otherwise take for a bug: a recording that ended early or saw nothing to record."""
    if capture.get("followed_processes_exited"):
        console.print(f"the processes {source} follows have exited: the recording ended with them", markup=False)
    if capture.get("connections"):
        return
    if capture.get("packets"):
        console.print(f"none of the {capture['packets']:,} packets was to or from port {port_list}: is --port the "
                      "memcached port of this capture?", markup=False)
    elif source == "ebpf:any":
        console.print(f"no connection on port {port_list} was seen: is memcached serving there?", markup=False)
    elif source.startswith("ebpf:"):
        console.print(f"no connection on port {port_list} was seen in the processes of {source}: is that "
                      "memcached, and --port its port?", markup=False)
