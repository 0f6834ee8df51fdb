"""A replay's result in memtier_benchmark's JSON shape (`--memtier-json`), so dashboards built on memtier read it.

memtier's `ALL STATS` has a section per command kind and one for all of them: Gets (the retrieval commands), Sets
(the storage commands) and Totals, each with Count, Ops/sec, Hits/sec, Misses/sec, latencies in milliseconds
(Latency and Average Latency are the mean, Max Latency, Percentile Latencies keyed "p50.00"...) and, for Totals,
a per-second Time-Serie keyed by the second's index. Byte rates (KB/sec) are left out: replay does not count
bytes on the wire, and a made-up figure would be worse than none; per-second series exist for Totals only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hdrh.histogram import HdrHistogram

from membench.profile.schema import Status
from membench.protocol.events import RETRIEVAL_COMMANDS, STORAGE_COMMANDS
from membench.replay.stats import STATUS_NAMES, Totals, mean_value, new_histogram, values_at_percentiles

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_HIT, _MISS = STATUS_NAMES.index(Status.HIT.value), STATUS_NAMES.index(Status.MISS.value)
_GETS = frozenset(command.value for command in RETRIEVAL_COMMANDS)
_SETS = frozenset(command.value for command in STORAGE_COMMANDS)


def memtier_document(totals: Totals, elapsed_s: float) -> dict[str, Any]:
    names = sorted(totals.counts)
    totals_section = _section(totals, names, elapsed_s)
    totals_section["Time-Serie"] = {
        str(index): {"Count": point.ops, **_latencies(interval)}
        for index, (point, interval) in enumerate(zip(totals.series, totals.intervals, strict=True))
    }
    return {"ALL STATS": {
        "Gets": _section(totals, [name for name in names if name in _GETS], elapsed_s),
        "Sets": _section(totals, [name for name in names if name in _SETS], elapsed_s),
        "Totals": totals_section,
        "Runtime": {"Total duration": round(elapsed_s * 1000), "Time unit": "MILLISECONDS"},
    }}


def _section(totals: Totals, names: Iterable[str], elapsed_s: float) -> dict[str, Any]:
    names = list(names)
    count = sum(sum(totals.counts[name]) for name in names)
    hits = sum(totals.counts[name][_HIT] for name in names)
    misses = sum(totals.counts[name][_MISS] for name in names)
    merged = new_histogram()
    for name in names:
        merged.add(totals.histograms[name])
    per_s = 1.0 / elapsed_s if elapsed_s > 0 else 0.0
    return {"Count": count, "Ops/sec": round(count * per_s, 2), "Hits/sec": round(hits * per_s, 2),
            "Misses/sec": round(misses * per_s, 2), **_latencies(merged)}


def _latencies(histogram: HdrHistogram) -> dict[str, Any]:
    """Mean, max and percentiles in milliseconds, memtier's unit (0 without a value)."""
    if histogram.get_total_count() == 0:
        values = dict.fromkeys(PERCENTILES, 0)
        mean = maximum = 0.0
    else:
        values = values_at_percentiles(histogram, PERCENTILES)
        mean, maximum = mean_value(histogram), histogram.get_max_value()
    return {"Latency": round(mean / 1000, 5), "Average Latency": round(mean / 1000, 5),
            "Max Latency": round(maximum / 1000, 5),
            "Percentile Latencies": {f"p{p:.2f}": round(values[p] / 1000, 5) for p in PERCENTILES}}
