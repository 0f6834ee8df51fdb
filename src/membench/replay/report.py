"""How a replay is shown: the final table in the manner of memtier_benchmark, and the HDR log."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime

from hdrh.log import HistogramLogWriter
from rich.console import Console
from rich.table import Table

from membench.replay.result import ReplayResult
from membench.replay.stats import Totals


def _ms(microseconds: float) -> str:
    return f"{microseconds / 1000:.3f}"


def render(result: ReplayResult, console: Console) -> None:
    """The final table, in the manner of memtier_benchmark: one line per command and a total."""
    table = Table(title=f"membench replay: {result.duration_s:.2f}s, {result.loops} loop(s)"
                        f"{' (interrupted)' if result.interrupted else ''}", title_justify="left")
    # The columns that fit 100 characters; the JSON has the mean and p90 as well.
    for column in ("Type", "Ops", "Ops/sec", "Hits/sec", "Misses/sec", "Errors", "p50 ms", "p99 ms", "p99.9 ms",
                   "Max ms"):
        table.add_column(column, justify="left" if column == "Type" else "right")
    seconds = result.duration_s or 1.0
    for name, command in result.commands.items():
        latency = command.latency_from_intended if command.latency_from_intended is not None else command.latency
        hits = "-" if command.hits is None else f"{command.hits / seconds:,.0f}"
        misses = "-" if command.misses is None else f"{command.misses / seconds:,.0f}"
        table.add_row(name, f"{command.ops:,}", f"{command.ops_per_s:,.0f}", hits, misses, f"{command.errors:,}",
                      _ms(latency.p50), _ms(latency.p99), _ms(latency.p99_9), _ms(latency.max))
    table.add_row("Totals", f"{result.ops:,}", f"{result.ops / seconds:,.0f}", "", "",
                  f"{sum(result.errors.values()):,}", "", "", "", "", style="bold")
    console.print(table)
    for warning in result.warnings:
        console.print(f"warning: {warning}", markup=False)
    console.print(f"hit ratio: recorded {_percent(result.hit_ratio.recorded)}, replayed "
                  f"{_percent(result.hit_ratio.replayed)}   warm-up: {result.warm.keys:,} keys", markup=False)
    skipped = result.profile.skipped_commands
    if skipped:
        console.print(f"not replayed: {sum(skipped.values()):,} of the profile's {result.profile.rows:,} operations ("
                      + ", ".join(f"{name} {count:,}" for name, count in sorted(skipped.items(),
                                                                                 key=lambda item: -item[1]))
                      + ")", markup=False)
    if result.cluster is not None:
        cluster = result.cluster
        console.print(f"cluster {cluster.address}: {cluster.actors} actors on {cluster.nodes} nodes, start skew "
                      f"{cluster.start_skew_ms:.1f} ms", markup=False)
        if cluster.niceness > 0:
            console.print(f"warning: the actors replayed at niceness {cluster.niceness} (Ray's for its workers), "
                          "behind every other process of their nodes: start the nodes with RAY_worker_niceness=0",
                          markup=False)
    if result.lateness is not None:
        late = result.lateness
        console.print(f"latency above is from the intended send time; schedule lateness p50 {_ms(late.p50)} "
                      f"p99 {_ms(late.p99)} max {_ms(late.max)} ms", markup=False)
    if result.merged_short_keys:
        console.print(f"{result.merged_short_keys:,} short recorded keys share a key: their length has fewer "
                      "possible keys than the profile has distinct hashes", markup=False)
    if result.errors:
        console.print("errors: " + ", ".join(f"{kind} {count:,}" for kind, count in result.errors.items()),
                      markup=False)
    if not result.interrupted and result.error_ratio > result.max_error_ratio:
        console.print(f"membench: {result.error_ratio:.1%} of the operations failed "
                      f"({result.failures:,} of {result.ops:,}), above --max-error-ratio "
                      f"{result.max_error_ratio:.1%}: the replay failed", markup=False)
    if result.client_cpu_us_per_op is not None and result.client_cpu_system_us_per_op is not None:
        console.print(f"client CPU: {result.client_cpu_us_per_op:.1f} µs per op "
                      f"({result.client_cpu_system_us_per_op:.1f} of them in the kernel)", markup=False)


def _percent(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio * 100:.2f}%"


def hdr_log(totals: Totals) -> str:
    """The per-interval latency histograms as an HdrHistogram log (HistogramLogProcessor reads it)."""
    with io.StringIO() as output:
        writer = HistogramLogWriter(output)
        writer.output_comment("membench replay: request latency of all commands, in microseconds")
        writer.output_log_format_version()
        # hdrh's output_start_time() misreads its milliseconds as seconds: the line is written here instead.
        started = time.time() - (totals.series[-1].end_s if totals.series else 0.0)
        stamp = datetime.fromtimestamp(started, UTC).isoformat(" ")
        output.write(f"#[StartTime: {started:.3f} (seconds since epoch), {stamp}]\n")
        writer.output_legend()
        for point, histogram in zip(totals.series, totals.intervals, strict=True):
            # A start of 0 would make hdrh take the histogram's own (unset) timestamps.
            writer.output_interval_histogram(histogram, point.start_s or 1e-9, point.end_s,
                                             max_value_unit_ratio=1.0)
        return output.getvalue()
