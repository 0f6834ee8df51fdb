"""Exact value counts of non-negative integers, accumulated batch by batch with numpy.

Sizes and latencies are small integers (a key is at most 250 bytes, an item 1 MiB by default, a latency a few
thousand µs), so a dense `bincount` holds them exactly in little memory and is O(n); the rare larger value goes to
a sparse list of (value, count) pairs. Exact counts make the percentiles exact, not estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DENSE_LIMIT = 1 << 21  # values below this are counted in a dense array (at most 16 MiB of int64)
# Percentiles as exact fractions, so the rank is computed in integers (99.9% of 1000 is 999, not 999.0000001).
PERCENTILES: tuple[tuple[str, int, int], ...] = (
    ("p50", 50, 100), ("p90", 90, 100), ("p99", 99, 100), ("p99_9", 999, 1000),
)


@dataclass
class Distribution:
    """Nearest-rank percentiles (numpy's `inverted_cdf`): each is a value that occurred, never an interpolation."""

    count: int
    min: int | None
    mean: float | None
    p50: int | None
    p90: int | None
    p99: int | None
    p99_9: int | None
    max: int | None


class CountHistogram:
    __slots__ = ("_dense", "_sparse_counts", "_sparse_values", "_sum")

    def __init__(self) -> None:
        self._dense = np.zeros(0, dtype=np.int64)
        self._sparse_values: list[np.ndarray] = []
        self._sparse_counts: list[np.ndarray] = []
        self._sum = 0

    def add(self, values: np.ndarray) -> None:
        """Count `values`, a 1-D array of non-negative integers without nulls."""
        if values.size == 0:
            return
        self._sum += int(values.sum(dtype=np.uint64))
        if int(values.max()) >= DENSE_LIMIT:
            large = values >= DENSE_LIMIT
            unique, counts = np.unique(values[large], return_counts=True)
            self._sparse_values.append(unique.astype(np.uint64))
            self._sparse_counts.append(counts.astype(np.int64))
            values = values[~large]
            if values.size == 0:
                return
        binned = np.bincount(values.astype(np.intp, copy=False))
        if binned.size > self._dense.size:
            grown = np.zeros(binned.size, dtype=np.int64)
            grown[: self._dense.size] = self._dense
            self._dense = grown
        self._dense[: binned.size] += binned

    def value_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct values in ascending order, with how often each occurred."""
        present = np.flatnonzero(self._dense)
        values = [present.astype(np.uint64)]
        counts = [self._dense[present]]
        if self._sparse_values:
            unique, inverse = np.unique(np.concatenate(self._sparse_values), return_inverse=True)
            values.append(unique)
            counts.append(np.bincount(inverse, weights=np.concatenate(self._sparse_counts)).astype(np.int64))
        return np.concatenate(values), np.concatenate(counts)

    def distribution(self) -> Distribution:
        values, counts = self.value_counts()
        total = int(counts.sum())
        if total == 0:
            return Distribution(0, None, None, None, None, None, None, None)
        cumulative = np.cumsum(counts)
        ranks = {}
        for name, numerator, denominator in PERCENTILES:
            # The smallest value whose cumulative count reaches numerator/denominator of the total.
            index = int(np.searchsorted(cumulative * denominator, total * numerator, side="left"))
            ranks[name] = int(values[index])
        return Distribution(count=total, min=int(values[0]), mean=self._sum / total, max=int(values[-1]), **ranks)

    def power_of_two_buckets(self) -> list[SizeBucket]:
        """Counts per power-of-two range (the bucket of `upper` holds values up to it, above the previous one's):
        what a size histogram draws."""
        values, counts = self.value_counts()
        if not len(values):
            return []
        exponents = np.ceil(np.log2(np.maximum(values.astype(np.float64), 1.0))).astype(np.int64)
        per_exponent = np.bincount(exponents, weights=counts.astype(np.float64))
        return [SizeBucket(upper=1 << int(exponent), count=int(count))
                for exponent, count in enumerate(per_exponent) if count]


@dataclass
class SizeBucket:
    upper: int  # values above the previous bucket's upper, up to this one (0 and 1 in the first)
    count: int

