"""The terminal's view of the per-connection breakdown and of the working set over time."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from membench.analyze.connections import Connections
from membench.analyze.working_set import WorkingSet

CONNECTIONS_SHOWN = 5


def busiest_connections(connections: Connections) -> Table:
    table = Table(title=f"Busiest connections (of {connections.count:,})", title_justify="left")
    for header in ("connection", "operations", "share", "hit ratio", "read", "written", "mean latency", "active"):
        table.add_column(header, justify="left" if header == "connection" else "right")
    for line in connections.busiest[:CONNECTIONS_SHOWN]:
        table.add_row(
            f"#{line.connection}", f"{line.operations:,}", f"{line.share:.1%}",
            "-" if line.hit_ratio is None else f"{line.hit_ratio:.1%}", _bytes(line.bytes_read),
            _bytes(line.bytes_written), "-" if line.mean_latency_us is None else f"{line.mean_latency_us:,.0f} µs",
            f"{(line.last_ns - line.first_ns) / 1e9:,.1f} s")
    return table


def working_set_line(working_set: WorkingSet) -> Text:
    keys = max(working_set.distinct_keys)
    peak = working_set.distinct_keys.index(keys)
    ratios = [ratio for ratio in working_set.one_hit_wonder_ratio if ratio is not None]
    how = "exact" if working_set.sample_rate >= 1.0 else f"estimated from a {working_set.sample_rate:.2%} key sample"
    return Text(f"Working set per {working_set.window_s} s window ({how}): at most {keys:,} keys holding "
                f"{_bytes(working_set.bytes[peak])} (window {peak}); largest "
                f"{_bytes(max(working_set.bytes))}; one-hit wonders {sum(ratios) / max(len(ratios), 1):.1%} of a "
                "window's keys on average")


def _bytes(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:,.1f} {unit}"
    return f"{count:,} B"
