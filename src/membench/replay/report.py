"""What a replay reports: its result, the final table in the manner of memtier_benchmark, and the HDR log."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hdrh.log import HistogramLogWriter
from rich.console import Console
from rich.table import Table

from membench.replay.stats import ERROR_STATUSES, Totals


@dataclass
class ReplayResult:
    """Every figure of one replay; `to_dict()` is what --json writes."""

    completed: bool  # every loop ran to its end (not interrupted), with failures within --max-error-ratio
    interrupted: bool
    loops: int
    duration_s: float
    ops: int
    requests: int
    commands: dict[str, dict[str, Any]]
    hit_ratio: dict[str, float | None]
    errors: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "interrupted": self.interrupted,
            "loops": self.loops,
            "duration_s": self.duration_s,
            "ops": self.ops,
            "requests": self.requests,
            "ops_per_s": round(self.ops / self.duration_s, 1) if self.duration_s else 0.0,
            "commands": self.commands,
            "hit_ratio": self.hit_ratio,
            "errors": self.errors,
            **self.details,
        }



def _ms(microseconds: float) -> str:
    return f"{microseconds / 1000:.3f}"


def render(result: ReplayResult, console: Console) -> None:
    """The final table, in the manner of memtier_benchmark: one line per command and a total."""
    open_loop = "lateness_us" in result.details
    table = Table(title=f"membench replay: {result.duration_s:.2f}s, {result.loops} loop(s)"
                        f"{' (interrupted)' if result.interrupted else ''}", title_justify="left")
    # The columns that fit 100 characters; the JSON has the mean and p90 as well.
    for column in ("Type", "Ops", "Ops/sec", "Hits/sec", "Misses/sec", "Errors", "p50 ms", "p99 ms", "p99.9 ms",
                   "Max ms"):
        table.add_column(column, justify="left" if column == "Type" else "right")
    seconds = result.duration_s or 1.0
    for name, entry in result.commands.items():
        latency = entry["latency_from_intended_us" if open_loop else "latency_us"]
        errors = sum(count for status, count in entry["statuses"].items() if status in ERROR_STATUSES)
        hits = f"{entry['hits'] / seconds:,.0f}" if "hits" in entry else "-"
        misses = f"{entry['misses'] / seconds:,.0f}" if "misses" in entry else "-"
        table.add_row(name, f"{entry['ops']:,}", f"{entry['ops_per_s']:,.0f}", hits, misses, f"{errors:,}",
                      _ms(latency["p50"]), _ms(latency["p99"]), _ms(latency["p99.9"]), _ms(latency["max"]))
    table.add_row("Totals", f"{result.ops:,}", f"{result.ops / seconds:,.0f}", "", "",
                  f"{sum(result.errors.values()):,}", "", "", "", "", style="bold")
    console.print(table)
    for warning in result.details.get("warnings", []):
        console.print(f"warning: {warning}", markup=False)
    ratio = result.hit_ratio
    console.print(f"hit ratio: recorded {_percent(ratio['recorded'])}, replayed {_percent(ratio['replayed'])}"
                  f"   warm-up: {result.details['warm']['keys']:,} keys", markup=False)
    if open_loop:
        late = result.details["lateness_us"]
        console.print(f"latency above is from the intended send time; schedule lateness p50 {_ms(late['p50'])} "
                      f"p99 {_ms(late['p99'])} max {_ms(late['max'])} ms", markup=False)
    merged = result.details["keys"]["merged_short_keys"]
    if merged:
        console.print(f"{merged:,} short recorded keys share a key: their length has fewer possible keys than the "
                      "profile has distinct hashes", markup=False)
    if result.errors:
        console.print("errors: " + ", ".join(f"{kind} {count:,}" for kind, count in result.errors.items()),
                      markup=False)
    if not result.interrupted and result.details["error_ratio"] > result.details["max_error_ratio"]:
        console.print(f"membench: {result.details['error_ratio']:.1%} of the operations failed "
                      f"({result.details['failures']:,} of {result.ops:,}), above --max-error-ratio "
                      f"{result.details['max_error_ratio']:.1%}: the replay failed", markup=False)
    cpu = result.details["client_cpu_us_per_op"]
    if cpu is not None:
        console.print(f"client CPU: {cpu:.1f} µs per op", markup=False)


def _percent(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio * 100:.2f}%"


def hdr_log(totals: Totals) -> str:
    """The per-interval latency histograms as an HdrHistogram log (HistogramLogProcessor reads it)."""
    with io.StringIO() as output:
        writer = HistogramLogWriter(output)
        writer.output_comment("membench replay: request latency of all commands, in microseconds")
        writer.output_log_format_version()
        # hdrh's output_start_time() misreads its milliseconds as seconds: the line is written here instead.
        started = time.time() - (totals.series[-1]["end_s"] if totals.series else 0.0)
        stamp = datetime.fromtimestamp(started, UTC).isoformat(" ")
        output.write(f"#[StartTime: {started:.3f} (seconds since epoch), {stamp}]\n")
        writer.output_legend()
        for point, histogram in zip(totals.series, totals.intervals, strict=True):
            # A start of 0 would make hdrh take the histogram's own (unset) timestamps.
            writer.output_interval_histogram(histogram, point["start_s"] or 1e-9, point["end_s"],
                                             max_value_unit_ratio=1.0)
        return output.getvalue()
