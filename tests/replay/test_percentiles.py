"""Replay's percentiles and means come from the HDR histograms' counts with numpy: they must be exactly what
HdrHistogram's own (Python-iterating) methods answer, for any recorded values."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from membench.replay.memtier import PERCENTILES
from membench.replay.stats import HIGHEST_US, add_values, mean_value, new_histogram, values_at_percentiles

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


def test_a_lognormal_replay_like_sample() -> None:
    histogram = new_histogram()
    add_values(histogram, list(np.random.default_rng(5).lognormal(4, 1.5, 50_000).astype(np.int64)))
    assert values_at_percentiles(histogram, [99.0]) == histogram.get_percentile_to_value_dict([99.0])
