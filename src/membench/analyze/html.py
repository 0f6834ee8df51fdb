"""`analyze --html`: one self-contained page with the report's charts and tables.

Plotly draws the charts: its plotly.js ships inside the Python package, so the page embeds it once, inline, and
opens anywhere with no network (Vega-Lite through Altair would need its three scripts fetched or an extra
converter package to inline them). Every figure comes from the AnalysisReport (charts.py); a chart whose data
the profile lacks (no operations, no keys, no replies) becomes a one-line note instead.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from membench.analyze import charts
from membench.analyze.report import AnalysisReport

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.2em 0.8em; text-align: left; }
tr:nth-child(even) { background: #f4f4f4; } .note { color: #777; font-style: italic; }
.warning { color: #a15c00; } .lossy { color: #b00020; font-weight: bold; }
"""


def html_page(report: AnalysisReport) -> str:
    """The whole page, as text."""
    body = [f"<h1>membench profile {html.escape(report.profile.path)}</h1>", _summary(report)]
    body += [f'<p class="warning">warning: {html.escape(warning)}</p>' for warning in report.warnings]
    if report.operations == 0:
        body.append('<p class="note">The profile holds no operations: there is nothing to chart.</p>')
    else:
        body += [_chart(name, chart) for name, chart in _charts(report)]
    body.append(_health(report))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>membench: {html.escape(report.profile.path)}</title><style>{_STYLE}</style>"
            f"<script>{get_plotlyjs()}</script></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _charts(report: AnalysisReport) -> Iterable[tuple[str, Callable[[], go.Figure] | str]]:
    """(section, the figure, or why there is none), in the page's order."""
    series, curve, popular = report.series, report.miss_ratio_curve, report.popularity
    yield "Throughput and hit ratio", (lambda: charts.throughput(series)) if series else "no time series"
    has_latency = series is not None and any(value is not None for value in series.latency_p50_us)
    yield "Latency", (lambda: charts.latency(series)) if series and has_latency else "no reply was recorded"
    working = report.working_set
    yield "Working set", (lambda: charts.working_set(working)) if working else "no keyed accesses"
    yield "Miss-ratio curve", ((lambda: charts.miss_ratio_curve(curve)) if curve is not None and curve.by_bytes
                               else "too few repeated accesses for a curve")
    yield "Popularity", ((lambda: charts.popularity(popular)) if popular is not None and popular.rank_frequency
                         else "no keyed operations")
    yield "Sizes", lambda: charts.sizes(report)
    yield "Command mix", lambda: charts.command_mix(report)


def _chart(name: str, chart: Callable[[], go.Figure] | str) -> str:
    if isinstance(chart, str):
        return f'<h2>{html.escape(name)}</h2><p class="note">No chart: {html.escape(chart)}.</p>'
    figure = chart().to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
    return f'<h2>{html.escape(name)}</h2><div class="chart">{figure}</div>'


def _summary(report: AnalysisReport) -> str:
    profile = report.profile
    rows = [
        ("source", f"{profile.source}, port(s) {', '.join(map(str, profile.ports))}"),
        ("recorded", f"{_time(profile.start_ns)} to {_time(profile.end_ns)}"),
        ("duration", f"{report.duration_s:,.3f} s"),
        ("operations", f"{report.operations:,} ({report.requests:,} requests)"),
        ("mean throughput", "-" if report.ops_per_s is None else f"{report.ops_per_s:,.0f} ops/s"),
        ("connections", f"{report.connections.count:,}"),
        ("distinct keys", f"{report.keys.distinct_keys:,}"),
        ("salt fingerprint", profile.salt_fingerprint or "-"),
    ]
    ratios = [f"{ratio.command} {ratio.ratio:.1%}" for ratio in report.hit_ratios if ratio.ratio is not None]
    if ratios:
        rows.append(("hit ratio", ", ".join(ratios)))
    return _table(rows)


def _health(report: AnalysisReport) -> str:
    health = report.health
    verdict = ('<p class="lossy">The capture lost data: these figures undercount.</p>' if health.lossy
               else "<p>Nothing was lost by the capture.</p>")
    rows = [(name, f"{value:,}") for name, value in health.losses.items()]
    return "<h2>Capture health</h2>" + verdict + (_table(rows) if rows else "")


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>" for name, value in rows)
    return f"<table>{cells}</table>"


def _time(ns: int | None) -> str:
    return "-" if ns is None else datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")
