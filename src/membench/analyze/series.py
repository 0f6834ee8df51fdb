"""The profile over time, window by window: operations, hit ratio, bytes, latency percentiles and the working set.

A window is one second, or longer for long profiles so that a series never has more than MAX_WINDOWS points.
Everything is counted per batch with numpy: latencies into a log-linear histogram per window (8 buckets per power
of two, so a percentile is within 12.5% of the exact one: the bucket's upper bound is reported), distinct keys
into a HyperLogLog per window (1,024 registers, about 3% standard error) over the key hashes, which are already
uniform 64-bit values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from membench.analyze.batch import BatchView
from membench.extensions import compiled
from membench.profile.timestamps import nanoseconds_since

MAX_WINDOWS = 10_000
_NS_PER_S = 1_000_000_000
_SUB_BUCKETS = 8  # per power of two
_LINEAR = 2 * _SUB_BUCKETS  # values below this have a bucket each
_BUCKETS = _LINEAR + (32 - 4) * _SUB_BUCKETS  # up to the largest uint32 latency
_REGISTER_BITS = 10
_REGISTERS = 1 << _REGISTER_BITS
_RANK_BITS = 52  # exact in float64, whose exponent finds the leading zeros
_ALPHA = 0.7213 / (1 + 1.079 / _REGISTERS)
PERCENTILES = (50.0, 99.0, 99.9)


@dataclass
class TimeSeries:
    window_s: int  # seconds per point
    start_ns: int  # start of the first window
    operations: list[int]
    hit_ratio: list[float | None]  # hits / (hits + misses) in the window; None without either
    bytes_read: list[int]  # value bytes returned by hits
    bytes_written: list[int]  # value bytes sent by storage commands
    latency_p50_us: list[int | None]  # upper bound of the percentile's bucket (<= 12.5% above the exact value)
    latency_p99_us: list[int | None]
    latency_p999_us: list[int | None]
    distinct_keys: list[int]  # working set: distinct keys in the window (HyperLogLog estimate, ~3% error)


def latency_bucket(latency_us: np.ndarray) -> np.ndarray:
    """The log-linear bucket of each latency (non-negative integers below 2**32)."""
    values = latency_us.astype(np.int64, copy=False)
    exponent = np.floor(np.log2(np.maximum(values, 1))).astype(np.int64)
    shift = np.maximum(exponent - 3, 0)
    sub = (values >> shift) & (_SUB_BUCKETS - 1)
    log_bucket = _LINEAR + (exponent - 4) * _SUB_BUCKETS + sub
    return np.where(values < _LINEAR, values, log_bucket)


def bucket_upper_bound(bucket: int) -> int:
    if bucket < _LINEAR:
        return bucket
    exponent = 4 + (bucket - _LINEAR) // _SUB_BUCKETS
    sub = (bucket - _LINEAR) % _SUB_BUCKETS
    return ((_SUB_BUCKETS + sub + 1) << (exponent - 3)) - 1


def specification(window: np.ndarray, view: BatchView, counts: np.ndarray, written: np.ndarray,
                  latency: np.ndarray, registers: np.ndarray) -> None:
    """Adds a batch's rows to the per-window tables, in place: `counts` (operations, hits, misses, bytes read),
    `written` (bytes), `latency` (a log-linear histogram per window), `registers` (a HyperLogLog per window);
    `window` is each row's window. The compiled twin (_series.pyx) does the same in one pass over the rows."""
    windows = len(counts)
    # Each row in one cell of (window, neither/hit/miss): one count instead of one per mask.
    outcome = view.hit.astype(np.intp) + 2 * view.miss
    cells = np.bincount(window * 3 + outcome, minlength=3 * windows).reshape(windows, 3)
    counts[:, 0] += cells.sum(axis=1)
    counts[:, 1:3] += cells[:, 1:]
    counts[:, 3] += np.bincount(window, weights=view.bytes_read, minlength=windows).astype(np.int64)
    written += np.bincount(window, weights=view.bytes_written, minlength=windows).astype(np.int64)
    answered = view.answered.all()
    latency_window = window if answered else window[view.answered]
    if latency_window.size:
        values = view.latency_us if answered else view.latency_us[view.answered]
        cells = latency_window * _BUCKETS + latency_bucket(values)
        latency += np.bincount(cells, minlength=windows * _BUCKETS).reshape(windows, _BUCKETS)
    keyed_window, hashes = (window, view.key_hash) if view.keyed.all() else (window[view.keyed],
                                                                             view.key_hash[view.keyed])
    if hashes.size:
        register = (hashes >> np.uint64(64 - _REGISTER_BITS)).astype(np.intp)
        np.maximum.at(registers.reshape(-1), keyed_window * _REGISTERS + register, _rank(hashes))


class SeriesCollector:
    """Per-window tables, grown as the rows' timestamps require. A profile whose rows run past the span its metadata
    announced (a damaged or foreign one) never gets more than MAX_WINDOWS + 1 windows (the last holds the profile's
    end): the windows widen instead, folding neighbours together (every table adds up, the HyperLogLog registers
    take their maximum)."""

    def __init__(self, start_ns: int | None, end_ns: int | None) -> None:
        span_s = (end_ns - start_ns) / _NS_PER_S if start_ns is not None and end_ns is not None else 0
        self.window_s = max(1, math.ceil(span_s / MAX_WINDOWS))
        self.window_ns = self.window_s * _NS_PER_S
        self.start_ns = None if start_ns is None else _aligned(start_ns, self.window_ns)
        self.windows = 0
        self._counts = np.zeros((0, 4), dtype=np.int64)  # operations, hits, misses, bytes read
        self._written = np.zeros(0, dtype=np.int64)
        self._latency = np.zeros((0, _BUCKETS), dtype=np.int64)
        self._registers = np.zeros((0, _REGISTERS), dtype=np.uint8)

    def add(self, view: BatchView) -> None:
        if self.start_ns is None:
            self.start_ns = _aligned(int(view.timestamps.min()), self.window_ns)
        offset = nanoseconds_since(view.timestamps, self.start_ns)  # rows before the start: the first window
        while (last_window := int(offset.max()) // self.window_ns) > MAX_WINDOWS:
            self._widen(max(2, math.ceil((last_window + 1) / MAX_WINDOWS)))
            offset = nanoseconds_since(view.timestamps, self.start_ns)
        window = (offset // np.uint64(self.window_ns)).astype(np.intp)
        self._grow(int(window.max()) + 1)
        count_rows(window, view, self._counts, self._written, self._latency, self._registers)

    def _grow(self, windows: int) -> None:
        if windows <= self.windows:
            return
        extra = windows - self.windows
        self._counts = np.vstack([self._counts, np.zeros((extra, 4), dtype=np.int64)])
        self._written = np.concatenate([self._written, np.zeros(extra, dtype=np.int64)])
        self._latency = np.vstack([self._latency, np.zeros((extra, _BUCKETS), dtype=np.int64)])
        self._registers = np.vstack([self._registers, np.zeros((extra, _REGISTERS), dtype=np.uint8)])
        self.windows = windows

    def _widen(self, factor: int) -> None:
        """Makes each window `factor` times longer, folding the windows counted so far into the new ones."""
        assert self.start_ns is not None
        window_ns = self.window_ns * factor
        start_ns = _aligned(self.start_ns, window_ns)
        before = (self.start_ns - start_ns) // self.window_ns  # old windows between the new start and the old
        target = (np.arange(self.windows) + before) // factor
        windows = int(target[-1]) + 1 if self.windows else 0
        self._counts = _folded(self._counts, target, windows, np.add)
        self._written = _folded(self._written, target, windows, np.add)
        self._latency = _folded(self._latency, target, windows, np.add)
        self._registers = _folded(self._registers, target, windows, np.maximum)
        self.window_s *= factor
        self.window_ns, self.start_ns, self.windows = window_ns, start_ns, windows

    def series(self) -> TimeSeries | None:
        if self.start_ns is None or self.windows == 0:
            return None
        operations, hits, misses, read = (self._counts[:, column] for column in range(4))
        looked_up = hits + misses
        ratio = [None if total == 0 else round(float(h) / float(total), 6) for h, total in zip(hits, looked_up,
                                                                                              strict=True)]
        percentiles = [self._percentile(p) for p in PERCENTILES]
        return TimeSeries(window_s=self.window_s, start_ns=self.start_ns, operations=operations.tolist(),
                          hit_ratio=ratio, bytes_read=read.tolist(), bytes_written=self._written.tolist(),
                          latency_p50_us=percentiles[0], latency_p99_us=percentiles[1],
                          latency_p999_us=percentiles[2], distinct_keys=self._distinct())

    def _percentile(self, percent: float) -> list[int | None]:
        cumulative = np.cumsum(self._latency, axis=1)
        totals = cumulative[:, -1]
        wanted = np.ceil(totals * percent / 100.0)
        buckets = (cumulative < wanted[:, None]).sum(axis=1)
        return [None if total == 0 else bucket_upper_bound(int(bucket)) for bucket, total in
                zip(buckets, totals, strict=True)]

    def _distinct(self) -> list[int]:
        registers = self._registers.astype(np.float64)
        raw = _ALPHA * _REGISTERS ** 2 / np.power(2.0, -registers).sum(axis=1)
        zeros = (self._registers == 0).sum(axis=1)
        small = (raw <= 2.5 * _REGISTERS) & (zeros > 0)
        linear = _REGISTERS * np.log(_REGISTERS / np.maximum(zeros, 1))
        estimate = np.where(small, linear, raw)
        return [int(value + 0.5) if empty < _REGISTERS else 0 for value, empty in zip(estimate, zeros, strict=True)]


def _aligned(instant_ns: int, window_ns: int) -> int:
    """The start of the window holding the instant, on the time axis's multiples of the window; the instant itself
    where that start would fall below int64 (a damaged profile's timestamp near its lowest value)."""
    start_ns = instant_ns - instant_ns % window_ns
    return start_ns if start_ns >= np.iinfo(np.int64).min else instant_ns


def _folded(table: np.ndarray, target: np.ndarray, windows: int, combine: np.ufunc) -> np.ndarray:
    folded = np.zeros((windows, *table.shape[1:]), dtype=table.dtype)
    combine.at(folded, target, table)
    return folded


def _rank(hashes: np.ndarray) -> np.ndarray:
    """HyperLogLog's rank of each hash: 1 + the leading zeros of its low _RANK_BITS bits (_RANK_BITS + 1 if all
    are zero)."""
    rest = (hashes & np.uint64((1 << _RANK_BITS) - 1)).astype(np.float64)  # exact: below 2**53
    # frexp's exponent is the bit length, exactly; log2 rounds 2**52 - 1 up to 52.
    _, bit_length = np.frexp(rest)
    return np.where(rest > 0, _RANK_BITS + 1 - bit_length, _RANK_BITS + 1).astype(np.uint8)


_twin = compiled("membench.analyze._series")
count_rows: Callable[[np.ndarray, BatchView, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None] = (
    specification if _twin is None else _twin.count_rows)
