"""Popularity: the Zipf fit finds the exponent a workload was drawn with; shares and one-hit wonders are exact."""

from __future__ import annotations

import numpy as np
import pytest

from membench.analyze.popularity import popularity


def zipf_counts(alpha: float, keys: int = 100_000, draws: int = 1_000_000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, keys + 1) ** alpha
    counts = np.bincount(rng.choice(keys, size=draws, p=weights / weights.sum()))
    return counts[counts > 0]


@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.2])
def test_the_fit_finds_the_exponent_the_workload_was_drawn_with(alpha: float) -> None:
    found = popularity(zipf_counts(alpha))
    assert found is not None and found.zipf_alpha is not None and found.zipf_r2 is not None
    assert abs(found.zipf_alpha - alpha) < 0.15 and found.zipf_r2 > 0.95


def test_one_hit_wonders_are_counted_exactly_and_left_out_of_the_fit() -> None:
    counts = np.array([500, 300, 100, 50] + [2] * 96 + [1] * 900)
    found = popularity(counts)
    assert found is not None
    assert found.one_hit_wonders == 900 and found.one_hit_wonder_ratio == 0.9
    assert found.zipf_fit_ranks == [1, 100]  # keys seen once are left out of the fit


def test_a_uniform_workload_has_no_skew_and_too_few_keys_no_fit() -> None:
    uniform = popularity(np.full(1000, 7))
    assert uniform is not None and uniform.zipf_alpha == pytest.approx(0.0, abs=1e-9)
    few = popularity(np.array([3, 2, 1]))
    assert few is not None and few.zipf_alpha is None and popularity(np.array([], dtype=np.int64)) is None
