"""Renders an AnalysisReport: rich tables for the terminal, the same tables as self-contained HTML, and JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from membench.analyze.histogram import Distribution
from membench.analyze.render_breakdown import busiest_connections, working_set_line
from membench.analyze.report import AnalysisReport
from membench.analyze.ttl import TtlStats
from membench.outputs import write_result

_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}

_PERCENTILE_HEADERS = ("count", "p50", "p90", "p99", "p99.9", "max", "mean")


def render_terminal(report: AnalysisReport, console: Console) -> None:
    console.print(_header(report))
    for warning in report.warnings:
        console.print(Text(f"warning: {warning}", style="bold yellow"))
    if report.operations == 0:
        console.print("The profile holds no operations.")
        return
    console.print(_overview(report))
    if report.connections.busiest:
        console.print(busiest_connections(report.connections))
    console.print(_commands(report))
    console.print(Text("Protocols: " + ", ".join(f"{name} {count / report.operations:.1%}"
                                                 for name, count in report.protocols.items())))
    if report.hit_ratios:
        console.print(_hit_ratios(report))
    console.print(_sizes(report))
    if report.ttl is not None and report.ttl.operations:
        console.print(_expirations(report.ttl))
    console.print(_key_summary(report))
    if report.working_set is not None and report.working_set.distinct_keys:
        console.print(working_set_line(report.working_set))
    if report.popularity is not None:
        console.print(_popularity(report))
    if report.keys.hottest:
        console.print(_hottest_keys(report))
    console.print(_latency(report))
    if report.miss_ratio_curve is not None and report.miss_ratio_curve.by_bytes:
        console.print(_cache_sizes(report))
    if report.miss_ratio_curve is not None and report.miss_ratio_curve.reuse_time_ms.count:
        console.print(_reuse(report))
    console.print(_health(report))


def write_json(report: AnalysisReport, path: Path) -> None:
    write_result(path, json.dumps(report.to_dict(), indent=2) + "\n", "--json")


def write_html(report: AnalysisReport, path: Path) -> None:
    """The report as one self-contained HTML page with charts (html.py); plotly loads only when asked for."""
    from membench.analyze.html import html_page

    write_result(path, html_page(report), "--html")


def _header(report: AnalysisReport) -> Panel:
    profile = report.profile
    ports = f", port(s) {', '.join(map(str, profile.ports))}" if profile.ports else ""
    lines = Text.assemble(
        f"source {_printable(profile.source)}{ports}\n",
        f"recorded {_time(profile.start_ns)} to {_time(profile.end_ns)}, profile created "
        f"{_printable(profile.created)}\n",
        f"salt fingerprint {_printable(profile.salt_fingerprint or 'unknown')}, schema v{profile.schema_version}, "
        f"written by membench {_printable(profile.membench_version)}, ",
        "complete" if profile.complete else ("INCOMPLETE", "bold yellow"))
    return Panel(lines, title=Text(f"membench profile {_printable(profile.path)}"), expand=False)


def _printable(text: str) -> str:
    """Metadata text as it may be shown: a damaged or foreign profile's control characters escaped, not sent to
    the terminal."""
    return text.translate(_CONTROL_ESCAPES)


def _overview(report: AnalysisReport) -> Table:
    table = Table(title="Load", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    throughput = report.throughput
    rows = [
        ("duration", f"{report.duration_s:,.3f} s"),
        ("operations", f"{report.operations:,}"),
        ("requests", f"{report.requests:,}  ({report.operations / max(report.requests, 1):.2f} keys/request)"),
        ("mean throughput", _rate(report.ops_per_s)),
        ("peak second", _second(throughput.peak_ops, throughput.peak_offset_s)),
        ("quietest full second", _second(throughput.min_ops, throughput.min_offset_s)),
        ("connections", f"{report.connections.count:,}"),
        ("busiest connection", _percent(report.connections.busiest_share) + " of operations"),
        ("operations/connection", _distribution_line(report.connections.operations_per_connection)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _commands(report: AnalysisReport) -> Table:
    table = Table(title="Command mix", title_justify="left")
    for header, justify in (("command", "left"), ("operations", "right"), ("share", "right"),
                            ("quiet", "right"), ("outcomes", "left")):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for stats in report.commands:
        outcomes = ", ".join(f"{status} {count / stats.operations:.1%}" for status, count in stats.statuses.items())
        table.add_row(stats.command, f"{stats.operations:,}", _percent(stats.share), f"{stats.quiet:,}", outcomes)
    return table


def _hit_ratios(report: AnalysisReport) -> Table:
    table = Table(title="Hit ratio (hits / (hits + misses))", title_justify="left")
    for header in ("command", "hits", "misses", "hit ratio", "unanswered/errors"):
        table.add_column(header, justify="left" if header == "command" else "right")
    for ratio in report.hit_ratios:
        style = "bold" if ratio.command == "all" else None
        table.add_row(ratio.command, f"{ratio.hits:,}", f"{ratio.misses:,}", _percent(ratio.ratio),
                      f"{ratio.other:,}", style=style)
    return table


def _sizes(report: AnalysisReport) -> Table:
    table = _distribution_table("Sizes (bytes)", "of")
    _distribution_row(table, "keys (per keyed operation)", report.keys.key_size)
    _distribution_row(table, "values stored", report.value_sizes.stored)
    _distribution_row(table, "values returned by hits", report.value_sizes.hit)
    return table


def _expirations(ttl: TtlStats) -> Text:
    relative = ttl.relative_s
    durations = (f"; in seconds p50 {relative.p50:,}, p99 {relative.p99:,}, max {relative.max:,}"
                 if relative.count else "")
    return Text(f"Expiration times: {ttl.operations:,} operations carried one: {ttl.never:,} never expire, "
                f"{ttl.immediate:,} expire at once, {ttl.absolute:,} as Unix times, {relative.count:,} as "
                f"durations{durations}")


def _key_summary(report: AnalysisReport) -> Text:
    keys = report.keys
    return Text(f"Keys: {keys.distinct_keys:,} distinct over {keys.keyed_operations:,} keyed operations; the "
                f"hottest 1% of keys take {_percent(keys.hottest_1pct_share)} of them, the hottest 10% take "
                f"{_percent(keys.hottest_10pct_share)}", style="italic")


def _popularity(report: AnalysisReport) -> Text:
    skew = report.popularity
    assert skew is not None
    fit = "too few keys for a Zipf fit"
    if skew.zipf_alpha is not None and skew.zipf_fit_ranks is not None:
        fit = (f"Zipf alpha {skew.zipf_alpha:.2f} (R² {skew.zipf_r2:.2f} over ranks {skew.zipf_fit_ranks[0]:,}-"
               f"{skew.zipf_fit_ranks[1]:,})")
    return Text(f"Popularity: {fit}; the hottest 0.1% of keys take {_percent(report.keys.hottest_0_1pct_share)}; "
                f"{skew.one_hit_wonders:,} keys ({_percent(skew.one_hit_wonder_ratio)}) are seen once",
                style="italic")


def _hottest_keys(report: AnalysisReport) -> Table:
    keys = report.keys
    table = Table()
    for header in ("hottest key hashes", "operations", "share"):
        table.add_column(header, justify="left" if header.startswith("hottest") else "right")
    for hot in keys.hottest:
        table.add_row(hot.key_hash, f"{hot.operations:,}", _percent(hot.share))
    return table


_MISS_RATIO_TARGETS = (0.5, 0.2, 0.1, 0.05, 0.02)


def _cache_sizes(report: AnalysisReport) -> Table | Text:
    """The smallest LRU cache that reaches each miss ratio, read off the curve (its cold misses are a floor)."""
    curve = report.miss_ratio_curve
    assert curve is not None
    floor = curve.by_bytes[-1].miss_ratio  # at the largest size: the misses no cache avoids
    targets = [target for target in _MISS_RATIO_TARGETS if target > floor]
    if floor + 0.01 < 1.0:
        targets.append(floor + 0.01)
    if not targets:
        return Text(f"LRU cache size: no cache helps, {_percent(floor)} of the accesses are first accesses",
                    style="italic")
    how = "exact" if curve.sample_rate >= 1.0 else f"SHARDS, {curve.sample_rate:.2%} of the keys"
    table = Table(title=f"LRU cache size for a miss ratio ({how}; first accesses miss at any size: "
                        f"{_percent(curve.cold_miss_ratio)})")
    for header in ("miss ratio", "cache bytes", "cache objects"):
        table.add_column(header, justify="right")
    for target in targets:
        by_bytes = next((p.cache_bytes for p in curve.by_bytes if p.miss_ratio <= target), None)
        by_objects = next((p.cache_objects for p in curve.by_objects if p.miss_ratio <= target), None)
        if by_bytes is None and by_objects is None:
            continue
        table.add_row(f"≤ {target:.1%}", "-" if by_bytes is None else f"{by_bytes:,}",
                      "-" if by_objects is None else f"{by_objects:,}")
    return table


def _reuse(report: AnalysisReport) -> Text:
    curve = report.miss_ratio_curve
    assert curve is not None
    time, distance = curve.reuse_time_ms, curve.reuse_distance_keys
    return Text(f"Reuse: a key comes back after p50 {time.p50:,} ms (p90 {time.p90:,} ms), with p50 "
                f"{distance.p50:,} other keys between (p90 {distance.p90:,})", style="italic")


def _latency(report: AnalysisReport) -> Table:
    table = _distribution_table("Server latency (µs, request end to reply start)", "command")
    table.add_column("no reply", justify="right")
    for latency in report.latency:
        _distribution_row(table, latency.command, latency.us, f"{latency.without_reply:,}",
                          style="bold" if latency.command == "all" else None)
    return table


def _health(report: AnalysisReport) -> Table:
    health = report.health
    verdict = ("LOSSY", "bold yellow") if health.lossy else "no loss counted"
    coverage = ""
    if health.bytes_seen is not None:
        coverage = f"; {health.bytes_seen:,} bytes seen"
        if health.bytes_parsed is not None and health.bytes_seen:
            coverage += f", {health.bytes_parsed:,} parsed ({health.bytes_parsed / health.bytes_seen:.1%})"
        if health.bytes_missing is not None:
            coverage += f", {health.bytes_missing:,} missing"
    table = Table(title=Text.assemble("Capture health: ", verdict, coverage), title_justify="left")
    table.add_column("stage")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for section, counters in health.counters.items():
        for name, value in counters.items():
            lost = f"{section}.{name}" in health.losses
            table.add_row(section, name, f"{value:,}" if isinstance(value, int) else str(value),
                          style="bold yellow" if lost else None)
    return table


def _distribution_table(title: str, first: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(first)
    for header in _PERCENTILE_HEADERS:
        table.add_column(header, justify="right")
    return table


def _distribution_row(table: Table, name: str, distribution: Distribution, *extra: str,
                      style: str | None = None) -> None:
    values = (distribution.p50, distribution.p90, distribution.p99, distribution.p99_9, distribution.max)
    mean = f"{distribution.mean:,.1f}" if distribution.mean is not None else "-"
    table.add_row(name, f"{distribution.count:,}", *(_number(v) for v in values), mean, *extra, style=style)


def _distribution_line(distribution: Distribution) -> str:
    if distribution.count == 0:
        return "-"
    return (f"p50 {_number(distribution.p50)}, p90 {_number(distribution.p90)}, "
            f"max {_number(distribution.max)}")


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ops/s"


def _second(ops: int | None, offset: int | None) -> str:
    return "-" if ops is None else f"{ops:,} ops (second {offset})"


def _time(ns: int | None) -> str:
    if ns is None:
        return "?"
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")
