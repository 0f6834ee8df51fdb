"""Miss-ratio curves: the LRU miss ratio the recorded workload would have at each cache size, in bytes and objects.

Spatial sampling (SHARDS, Waldspurger et al., FAST'15) keeps every access to a fixed fraction of the keys, chosen
by their keyed hash, so the sample holds whole key histories; the stack distances of the sample, divided by the
rate, estimate those of the whole workload. The rate is set so that at most SAMPLED_ACCESSES are kept, which
bounds memory and time whatever the profile's size; a profile that small is simulated exactly.

An access is any keyed retrieval, storage or touch (deletes and counters are not: they change no cached size a
later access can see in the profile). Its size is the value length it recorded; a miss, which shows none, takes
the size the key had or will have (a get miss followed by the set that fills it), else its key length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from membench.analyze.batch import BatchView
from membench.analyze.histogram import CountHistogram, Distribution
from membench.analyze.stack import stack_distances
from membench.analyze.working_set import WorkingSet, working_set
from membench.protocol.events import RETRIEVAL_COMMANDS, STORAGE_COMMANDS, Command

SAMPLED_ACCESSES = 2_000_000
_HASH_SPACE = 1 << 24  # sampling compares the low 24 bits of the keyed hash with rate * this
_POINTS = 48  # cache sizes reported, log-spaced between the smallest and the largest useful size
# A sampled curve is reported from the size that holds this many sampled keys of average size. Below, few sampled
# keys fall between two accesses and whether a hot or a large key is in the sample sways the estimate: on a Zipf
# 0.99 profile with log-normal sizes, 10M operations at a rate of 0.2, five salts gave errors up to 4 points at 32
# keys, 1 at 1,000 and 0.64 at 2,000 (bench/mrc_scale.py measures it). An exact curve (rate 1) starts at the bottom.
_SMALLEST_SAMPLED = 2000
_ACCESSES = frozenset(c.value for c in (*RETRIEVAL_COMMANDS, *STORAGE_COMMANDS, Command.TOUCH))


@dataclass
class MissRatioPoint:
    cache_bytes: int
    miss_ratio: float


@dataclass
class ObjectMissRatioPoint:
    cache_objects: int
    miss_ratio: float


@dataclass
class MissRatioCurve:
    """LRU miss ratio by cache size; `sample_rate` 1 means an exact simulation."""

    sample_rate: float
    accesses: int  # accesses in the whole profile
    sampled_accesses: int
    cold_miss_ratio: float  # first accesses: misses at any size
    by_bytes: list[MissRatioPoint]
    by_objects: list[ObjectMissRatioPoint]
    # From the same sample, over accesses to a key seen before: time since its previous access, and how many
    # distinct other keys were accessed in between (its LRU stack depth, scaled like the curve).
    reuse_time_ms: Distribution
    reuse_distance_keys: Distribution


@dataclass
class ScaledDistances:
    """Each sampled access's LRU distance (-1: a first access, cold at any size), scaled by the sampling rate: an
    access misses in a cache smaller than its distance. Miss ratios are taken over `total` accesses."""

    by_bytes: np.ndarray  # float64
    by_objects: np.ndarray
    total: float

    def miss_ratio(self, cache_bytes: int) -> float:
        return min(1.0, int(np.count_nonzero((self.by_bytes < 0) | (self.by_bytes > cache_bytes))) / self.total)


class MissRatioCollector:
    """Keeps the sampled accesses of a profile's batches, in order; `curve()` simulates them."""

    def __init__(self, expected_operations: int) -> None:
        self.rate = min(1.0, SAMPLED_ACCESSES / max(1, expected_operations))
        self._threshold = int(self.rate * _HASH_SPACE)
        self._hashes: list[np.ndarray] = []
        self._sizes: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self.accesses = 0
        self._prepared: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def add(self, view: BatchView) -> None:
        # Decided once per command name, then looked up per row: no string per row.
        accessing = np.array([name in _ACCESSES for name in view.command_names], dtype=bool)
        access = accessing[view.command] & view.keyed
        self.accesses += int(np.count_nonzero(access))
        if self.rate < 1.0:
            access &= (view.key_hash & (_HASH_SPACE - 1)) < self._threshold
        rows = np.flatnonzero(access)
        if not len(rows):
            return
        self._hashes.append(view.key_hash[rows])
        self._times.append(view.timestamps[rows])
        key_lengths = view.batch.column("key_length").take(rows).cast(pa.int64()).fill_null(1).to_numpy()
        # -1 - key length marks a size still to be learned from the key's other accesses (see _sizes_filled).
        self._sizes.append(np.where(view.has_value[rows], view.value_length[rows], -1 - key_lengths))

    def working_set(self, start_ns: int | None, window_s: int, windows: int) -> WorkingSet | None:
        """The sampled accesses window by window (see working_set.py), on the time series' windows."""
        if not self._hashes or start_ns is None or windows == 0:
            return None
        keys, by_key, sizes, times = self._sample()
        return working_set(keys, by_key, times, sizes, self.rate, start_ns, window_s, windows)

    def _sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The sampled accesses, in order: key codes, the order that puts each key's accesses together, sizes
        (unknown ones filled in), times. Computed once for the curve and the working set."""
        if self._prepared is None:
            hashes = np.concatenate(self._hashes)
            by_key = np.argsort(hashes, kind="stable")  # each key's accesses together, in order
            # Dense codes from the same sort: a code per run of equal hashes.
            ordered = hashes[by_key]
            starts = np.concatenate(([0], ordered[1:] != ordered[:-1])).astype(np.int64)
            keys = np.empty(len(ordered), dtype=np.int64)
            keys[by_key] = np.cumsum(starts)
            sizes = _sizes_filled(keys, np.concatenate(self._sizes), by_key)
            self._prepared = (keys, by_key, sizes, np.concatenate(self._times))
        return self._prepared

    def _smallest(self, mean_size: float) -> float:
        return 0.0 if self.rate >= 1.0 else _SMALLEST_SAMPLED * mean_size / self.rate

    def distances(self) -> ScaledDistances | None:
        """The sampled accesses' LRU distances, scaled to the whole workload."""
        if not self._hashes:
            return None
        keys, by_key, sizes, _ = self._sample()
        by_bytes, by_objects = stack_distances(keys, sizes)
        # Only the data of other keys is sampled: the key's own size (its previous one) stays as it is.
        own = _previous_sizes(keys, sizes, by_key)
        warm = by_bytes >= 0
        # SHARDS-adj: a skewed workload puts more (or fewer) accesses in the sample than the rate promises; the
        # difference are accesses to hot keys, hits at any useful size, so the curve is taken over the expected
        # count instead (Waldspurger et al., section 3.2).
        total = len(keys) if self.rate >= 1.0 else max(1.0, self.accesses * self.rate)
        return ScaledDistances(by_bytes=np.where(warm, own + (by_bytes - own) / self.rate, -1.0),
                               by_objects=np.where(warm, 1 + (by_objects - 1) / self.rate, -1.0), total=total)

    def curve(self) -> MissRatioCurve | None:
        distances = self.distances()
        if distances is None:
            return None
        keys, by_key, sizes, times = self._sample()
        warm = distances.by_bytes >= 0
        reuse_time = CountHistogram()
        reuse_time.add(_reuse_times_ms(times, keys, by_key)[warm])
        reuse_distance = CountHistogram()
        reuse_distance.add(np.rint(distances.by_objects[warm] - 1).astype(np.int64))
        return MissRatioCurve(
            sample_rate=self.rate, accesses=self.accesses, sampled_accesses=len(keys),
            cold_miss_ratio=min(1.0, float(np.count_nonzero(~warm)) / distances.total),
            reuse_time_ms=reuse_time.distribution(), reuse_distance_keys=reuse_distance.distribution(),
            by_bytes=[MissRatioPoint(cache_bytes=size, miss_ratio=ratio) for size, ratio in
                      _points(distances.by_bytes, distances.total, self._smallest(sizes.mean()))],
            by_objects=[ObjectMissRatioPoint(cache_objects=size, miss_ratio=ratio) for size, ratio in
                        _points(distances.by_objects, distances.total, self._smallest(1.0))])


def _sizes_filled(keys: np.ndarray, sizes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Unknown sizes (negative) take the key's previous known size, else its next, else its key length; `order`
    lists each key's accesses together, in order."""
    ordered_keys, ordered = keys[order], sizes[order]
    unknown = np.flatnonzero(ordered < 0)
    if not len(unknown):
        return sizes
    index = np.arange(len(order))
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = ordered_keys[1:] != ordered_keys[:-1]
    ends = np.append(starts[1:], True)
    known = ordered >= 0
    # Per position: its key's first and last position, and the nearest known position looking back and ahead;
    # a known position outside the key's own run belongs to another key.
    first = np.maximum.accumulate(np.where(starts, index, 0))[unknown]
    last = np.minimum.accumulate(np.where(ends, index, len(order))[::-1])[::-1][unknown]
    before = np.maximum.accumulate(np.where(known, index, -1))[unknown]
    after = np.minimum.accumulate(np.where(known, index, len(order))[::-1])[::-1][unknown]
    source = np.where(before >= first, before, np.where(after <= last, after, -1))
    filled_ordered = ordered.copy()
    found = source >= 0
    filled_ordered[unknown[found]] = ordered[source[found]]
    filled_ordered[unknown[~found]] = -1 - ordered[unknown[~found]]  # back to the key length stored as -1 - length
    filled = np.empty_like(sizes)
    filled[order] = filled_ordered
    return filled


def _reuse_times_ms(times: np.ndarray, keys: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Milliseconds since the previous access to the same key (0 for a first access, which callers leave out)."""
    since = np.zeros(len(keys), dtype=np.int64)
    same = keys[order[1:]] == keys[order[:-1]]
    gaps = times[order[1:][same]] - times[order[:-1][same]]
    since[order[1:][same]] = np.maximum(gaps, 0) // 1_000_000
    return since


def _previous_sizes(keys: np.ndarray, sizes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Each access's key's size at its previous access (0 for a first access); `order` as for _sizes_filled."""
    previous = np.zeros(len(keys), dtype=np.int64)
    same = keys[order[1:]] == keys[order[:-1]]
    previous[order[1:][same]] = sizes[order[:-1][same]]
    return previous


def _points(distances: np.ndarray, total: float, smallest: float) -> list[tuple[int, float]]:
    """(cache size, miss ratio) on a log grid from `smallest`: an access misses where its distance exceeds the size."""
    warm = np.sort(distances[distances >= 0])
    if not len(warm):
        return []
    low, high = max(1.0, warm[0], smallest), max(1.0, warm[-1])
    if low > high:
        return []
    sizes = np.unique(np.geomspace(low, high, _POINTS).round().astype(np.int64))
    misses = len(distances) - np.searchsorted(warm, sizes, side="right")
    return [(int(size), min(1.0, int(miss) / total)) for size, miss in zip(sizes, misses, strict=True)]
