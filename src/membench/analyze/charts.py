"""The figures of the HTML report, each from a part of the AnalysisReport (Plotly figures: drawn by plotly.js,
which the page embeds). A chart whose data the profile does not have is left out; html.py says so instead."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from membench.analyze.histogram import SizeBucket
from membench.analyze.mrc import MissRatioCurve
from membench.analyze.popularity import Popularity
from membench.analyze.report import AnalysisReport
from membench.analyze.series import TimeSeries
from membench.analyze.working_set import WorkingSet

_LAYOUT = {"height": 360, "margin": {"l": 60, "r": 60, "t": 50, "b": 50}, "template": "plotly_white",
           "legend": {"orientation": "h", "y": -0.2}}


def _seconds(series: TimeSeries | WorkingSet, points: int) -> list[int]:
    return [index * series.window_s for index in range(points)]


def throughput(series: TimeSeries) -> go.Figure:
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    x = _seconds(series, len(series.operations))
    figure.add_trace(go.Scatter(x=x, y=[count / series.window_s for count in series.operations], name="ops/s",
                                mode="lines"), secondary_y=False)
    figure.add_trace(go.Scatter(x=x, y=series.hit_ratio, name="hit ratio", mode="lines", connectgaps=False),
                     secondary_y=True)
    figure.update_layout(title="Operations per second and hit ratio over time", **_LAYOUT)
    figure.update_xaxes(title_text=f"seconds from the start ({series.window_s} s windows)")
    figure.update_yaxes(title_text="operations/s", secondary_y=False)
    figure.update_yaxes(title_text="hit ratio", range=[0, 1], tickformat=".0%", secondary_y=True)
    return figure


def latency(series: TimeSeries) -> go.Figure:
    figure = go.Figure()
    x = _seconds(series, len(series.operations))
    for name, values in (("p50", series.latency_p50_us), ("p99", series.latency_p99_us),
                         ("p99.9", series.latency_p999_us)):
        figure.add_trace(go.Scatter(x=x, y=values, name=name, mode="lines", connectgaps=False))
    figure.update_layout(title="Server latency percentiles over time", xaxis_title="seconds from the start",
                         yaxis_title="µs (upper bound of the bucket)", **_LAYOUT)
    return figure


def working_set(working: WorkingSet) -> go.Figure:
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    x = _seconds(working, len(working.distinct_keys))
    figure.add_trace(go.Scatter(x=x, y=working.distinct_keys, name="distinct keys", mode="lines"),
                     secondary_y=False)
    figure.add_trace(go.Scatter(x=x, y=working.bytes, name="their bytes", mode="lines"), secondary_y=True)
    how = "exact" if working.sample_rate >= 1.0 else f"from a {working.sample_rate:.2%} key sample"
    figure.update_layout(title=f"Working set per window ({how})", **_LAYOUT)
    figure.update_xaxes(title_text="seconds from the start")
    figure.update_yaxes(title_text="keys", secondary_y=False)
    figure.update_yaxes(title_text="bytes", secondary_y=True)
    return figure


def miss_ratio_curve(curve: MissRatioCurve) -> go.Figure:
    figure = go.Figure(go.Scatter(x=[point.cache_bytes for point in curve.by_bytes],
                                  y=[point.miss_ratio for point in curve.by_bytes], mode="lines+markers",
                                  name="LRU"))
    how = "exact simulation" if curve.sample_rate >= 1.0 else f"SHARDS, {curve.sample_rate:.2%} of the keys"
    figure.update_layout(title=f"Miss ratio by cache size (LRU, {how})", xaxis_title="cache size (bytes)",
                         yaxis_title="miss ratio", **_LAYOUT)
    figure.update_xaxes(type="log")
    figure.update_yaxes(range=[0, 1], tickformat=".0%")
    return figure


def popularity(popular: Popularity) -> go.Figure:
    ranks = [point.rank for point in popular.rank_frequency]
    figure = go.Figure(go.Scatter(x=ranks, y=[point.operations for point in popular.rank_frequency],
                                  mode="markers", name="keys"))
    title = "Key popularity (rank / frequency)"
    if popular.zipf_alpha is not None and popular.zipf_fit_ranks is not None:
        title += f": Zipf alpha {popular.zipf_alpha:.2f}, R² {popular.zipf_r2:.2f}"
    figure.update_layout(title=title, xaxis_title="rank (1 = hottest)", yaxis_title="operations", **_LAYOUT)
    figure.update_xaxes(type="log")
    figure.update_yaxes(type="log")
    return figure


def sizes(report: AnalysisReport) -> go.Figure:
    figure = go.Figure()
    histograms = (("key", report.keys.key_size_histogram), ("stored value", report.value_sizes.stored_histogram),
                  ("returned value", report.value_sizes.hit_histogram))
    for name, buckets in histograms:
        if buckets:
            figure.add_trace(go.Bar(x=[_size_label(bucket) for bucket in buckets],
                                    y=[bucket.count for bucket in buckets], name=name))
    figure.update_layout(title="Key and value sizes", xaxis_title="bytes (up to)", yaxis_title="operations",
                         barmode="group", **_LAYOUT)
    figure.update_yaxes(type="log")
    return figure


def command_mix(report: AnalysisReport) -> go.Figure:
    statuses = sorted({status for stats in report.commands for status in stats.statuses})
    figure = go.Figure()
    for status in statuses:
        figure.add_trace(go.Bar(x=[stats.command for stats in report.commands],
                                y=[stats.statuses.get(status, 0) for stats in report.commands], name=status))
    figure.update_layout(title="Command mix and outcomes", yaxis_title="operations", barmode="stack", **_LAYOUT)
    return figure


def _size_label(bucket: SizeBucket) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if bucket.upper >= size:
            return f"{bucket.upper // size} {unit}"
    return f"{bucket.upper} B"
