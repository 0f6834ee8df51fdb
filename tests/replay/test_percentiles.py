"""Replay's percentiles and means come from the HDR histograms' counts with numpy: they must be exactly what
HdrHistogram's own (Python-iterating) methods answer, for any recorded values."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from membench.replay.memtier import PERCENTILES
from membench.replay.stats import (
    HIGHEST_US,
    Meter,
    Totals,
    add_values,
    mean_value,
    new_histogram,
    values_at_percentiles,
)

latencies = st.lists(st.one_of(st.integers(0, 200), st.integers(0, 100_000), st.integers(0, HIGHEST_US)),
                     min_size=1, max_size=3000)


@settings(max_examples=60, deadline=None)
@given(latencies)
def test_numpy_answers_are_hdrhistograms_own(values: list[int]) -> None:
    histogram = new_histogram()
    add_values(histogram, values)
    wanted = sorted({50.0, 90.0, 99.0, 99.9, 100.0, *PERCENTILES})
    assert values_at_percentiles(histogram, wanted) == histogram.get_percentile_to_value_dict(wanted)
    assert mean_value(histogram) == histogram.get_mean_value()


@settings(max_examples=60, deadline=None)
@given(latencies)
def test_counts_are_those_of_recording_each_value(values: list[int]) -> None:
    """Both ways of indexing (values under the first bucket's end, and any values) give record_value's counts."""
    ours, theirs = new_histogram(), new_histogram()
    add_values(ours, values)
    for value in values:
        theirs.record_value(max(value, 0))
    assert list(ours.counts) == list(theirs.counts)
    assert (ours.get_total_count(), ours.get_min_value(), ours.get_max_value()) == (
        theirs.get_total_count(), theirs.get_min_value(), theirs.get_max_value())


def test_a_lognormal_replay_like_sample() -> None:
    histogram = new_histogram()
    add_values(histogram, list(np.random.default_rng(5).lognormal(4, 1.5, 50_000).astype(np.int64)))
    assert values_at_percentiles(histogram, [99.0]) == histogram.get_percentile_to_value_dict([99.0])


@settings(max_examples=40, deadline=None)
@given(st.lists(latencies, min_size=1, max_size=4))
def test_merged_workers_give_the_percentiles_of_all_their_values_together(parts: list[list[int]]) -> None:
    """Local workers and cluster actors are merged from their snapshots: losslessly, as one histogram of all."""
    totals = Totals()
    for values in parts:
        meter = Meter(["get"], open_loop=False)
        meter.latencies[0].append(values)
        meter.fold(0.0, 1.0)
        totals.merge(meter.snapshot())
    together = new_histogram()
    add_values(together, [value for values in parts for value in values])
    wanted = [50.0, 90.0, 99.0, 99.9, 100.0]
    assert values_at_percentiles(totals.histograms["get"], wanted) == values_at_percentiles(together, wanted)
    assert totals.histograms["get"].get_total_count() == together.get_total_count()
