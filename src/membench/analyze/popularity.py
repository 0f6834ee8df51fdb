"""How skewed the load is over keys: a Zipf fit of frequency against rank, and the keys seen only once (one-hit
wonders, which a cache holds for nothing). The hottest keys' shares are in KeyStats (compute.py).

The fit follows libCacheSim's traceAnalyzer: a least-squares line through (log rank, log frequency); alpha is
minus its slope. Keys seen once form a flat tail that says nothing of the skew, so the fit runs over the ranks of
keys seen at least twice (all ranks if fewer than _MIN_FIT_RANKS are), and reports that range and its R^2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_MIN_FIT_RANKS = 10
_CURVE_POINTS = 200


@dataclass
class Popularity:
    zipf_alpha: float | None  # None with fewer than _MIN_FIT_RANKS distinct keys
    zipf_r2: float | None  # how well a power law describes the fitted ranks
    zipf_fit_ranks: list[int] | None  # [first, last] rank the fit used, 1-based
    one_hit_wonders: int  # keys with exactly one operation
    one_hit_wonder_ratio: float  # of distinct keys
    # The rank/frequency curve at up to _CURVE_POINTS log-spaced ranks (what a log-log popularity chart draws).
    rank_frequency: list[RankCount] = field(default_factory=list)


@dataclass
class RankCount:
    rank: int  # 1 = the hottest key
    operations: int


def popularity(counts: np.ndarray) -> Popularity | None:
    """From the operation count of each distinct key (any order)."""
    if counts.size == 0:
        return None
    ordered = np.sort(counts)[::-1].astype(np.float64)
    alpha = r2 = None
    ranks: list[int] | None = None
    repeated = int(np.count_nonzero(ordered >= 2))
    last = repeated if repeated >= _MIN_FIT_RANKS else ordered.size
    if last >= _MIN_FIT_RANKS:
        x = np.log(np.arange(1, last + 1, dtype=np.float64))
        y = np.log(ordered[:last])
        slope, intercept = np.polyfit(x, y, 1)
        residual = float(((y - (slope * x + intercept)) ** 2).sum())
        spread = float(((y - y.mean()) ** 2).sum())
        alpha, r2, ranks = float(-slope) + 0.0, (1.0 - residual / spread) if spread else 1.0, [1, last]
    once = int(np.count_nonzero(counts == 1))
    curve_ranks = np.unique(np.geomspace(1, ordered.size, min(_CURVE_POINTS, ordered.size)).round().astype(np.int64))
    return Popularity(zipf_alpha=alpha, zipf_r2=r2, zipf_fit_ranks=ranks, one_hit_wonders=once,
                      one_hit_wonder_ratio=once / counts.size,
                      rank_frequency=[RankCount(rank=int(rank), operations=int(ordered[rank - 1]))
                                      for rank in curve_ranks])
