"""Counting helpers of the analysis: global codes for dictionary columns, operations per key hash, operations per
calendar second; each merges per-batch counts without a Python loop over rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UNKNOWN = "(unknown)"  # a dictionary column that an older part lacks
_MERGE_KEYS_AT = 1 << 22  # pending per-batch key counts are merged once they exceed this many entries
_NS_PER_S = 1_000_000_000
_BLOCK_BITS = 12
_BLOCK_S = 1 << _BLOCK_BITS  # seconds per block of SecondCounts: an hour and 8 minutes
_DENSE_BLOCKS = 64  # a batch spanning fewer blocks is binned over all of them, without sorting its rows


class Codes:
    """Global integer codes for the strings of dictionary columns, whose per-batch dictionaries differ."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def code(self, name: str) -> int:
        if name not in self._index:
            self._index[name] = len(self.names)
            self.names.append(name)
        return self._index[name]

    def of(self, column: pa.Array) -> np.ndarray:
        """The global code of every row of a dictionary (or plain string) column."""
        if not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
        lookup = np.array([self.code(name) for name in column.dictionary.to_pylist()] + [self.code(UNKNOWN)],
                          dtype=np.int64)
        indices = column.indices
        if indices.null_count:
            indices = indices.fill_null(len(column.dictionary))
        return lookup[indices.to_numpy()]


class KeyCounter:
    """Operations per distinct key hash: value_counts per batch, merged with a hash group-by when they pile up."""

    def __init__(self) -> None:
        self._merged: pa.Table | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def add(self, counted: pa.Table) -> None:
        """One batch's counts, as `count_keys` gives them."""
        if counted.num_rows == 0:
            return
        self._pending.append(counted)
        self._pending_rows += counted.num_rows
        if self._pending_rows >= max(_MERGE_KEYS_AT, self._merged.num_rows if self._merged else 0):
            self._merge()

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        self._merge()
        if self._merged is None:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
        return (self._merged["key"].to_numpy(), self._merged["count"].to_numpy())

    def _merge(self) -> None:
        if not self._pending:
            return
        tables = ([self._merged] if self._merged is not None else []) + self._pending
        merged = pa.concat_tables(tables).group_by("key").aggregate([("count", "sum")])
        self._merged = merged.rename_columns(["key", "count"]).combine_chunks()
        self._pending = []
        self._pending_rows = 0


def count_keys(hashes: pa.Array) -> pa.Table:
    """Operations per distinct key hash of one batch (rows without a key left out): "key" and "count" columns."""
    counted = pc.value_counts(hashes.drop_null() if hashes.null_count else hashes)
    return pa.table({"key": counted.field("values"), "count": counted.field("counts").cast(pa.int64())})


@dataclass
class SecondExtremes:
    seconds: int  # from the first second with an operation to the last, both included
    peak_ops: int
    peak_offset_s: int  # from the first second; the earliest of equal peaks
    min_ops: int | None  # over the full seconds (all but the first and last); None without any
    min_offset_s: int | None


class SecondCounts:
    """Operations per calendar second, in blocks of _BLOCK_S seconds allocated as rows reach them: memory follows the
    seconds that hold operations, however far apart (a damaged profile's rows may lie centuries apart)."""

    def __init__(self) -> None:
        self._blocks: dict[int, np.ndarray] = {}  # block number -> operations in each of its seconds

    def add(self, timestamps_ns: np.ndarray) -> None:
        seconds = timestamps_ns // _NS_PER_S
        block = seconds >> _BLOCK_BITS
        low, high = int(block.min()), int(block.max())
        if high - low < _DENSE_BLOCKS:
            numbers, index = np.arange(low, high + 1), block - low
        else:
            numbers, index = np.unique(block, return_inverse=True)
        cells = index.astype(np.intp) * _BLOCK_S + (seconds & (_BLOCK_S - 1))
        binned = np.bincount(cells, minlength=len(numbers) * _BLOCK_S).reshape(len(numbers), _BLOCK_S)
        for row in np.flatnonzero(binned.any(axis=1)):
            number = int(numbers[row])
            counts = self._blocks.get(number)
            self._blocks[number] = binned[row].copy() if counts is None else counts + binned[row]

    def extremes(self) -> SecondExtremes | None:
        if not self._blocks:
            return None
        order = sorted(self._blocks)
        first = order[0] * _BLOCK_S + int(np.flatnonzero(self._blocks[order[0]])[0])
        last = order[-1] * _BLOCK_S + int(np.flatnonzero(self._blocks[order[-1]])[-1])
        peak_ops, peak_second = 0, first
        for number in order:
            at = int(np.argmax(self._blocks[number]))
            if int(self._blocks[number][at]) > peak_ops:  # strictly: the earliest of equal peaks stays
                peak_ops, peak_second = int(self._blocks[number][at]), number * _BLOCK_S + at
        quietest = self._quietest(first + 1, last - 1)
        return SecondExtremes(seconds=last - first + 1, peak_ops=peak_ops, peak_offset_s=peak_second - first,
                              min_ops=None if quietest is None else quietest[0],
                              min_offset_s=None if quietest is None else quietest[1] - first)

    def _quietest(self, low: int, high: int) -> tuple[int, int] | None:
        """The fewest operations in a second from `low` to `high` (both included), and the earliest such second;
        the seconds of blocks never reached count zero."""
        best: tuple[int, int] | None = None
        for number in range(low >> _BLOCK_BITS, (high >> _BLOCK_BITS) + 1) if low <= high else ():
            counts = self._blocks.get(number)
            start = max(low - number * _BLOCK_S, 0)
            stop = min(high - number * _BLOCK_S, _BLOCK_S - 1) + 1
            if counts is None:  # before any zero second, or the search would have ended there
                return 0, number * _BLOCK_S + start
            window = counts[start:stop]
            at = int(np.argmin(window))
            if best is None or int(window[at]) < best[0]:
                best = (int(window[at]), number * _BLOCK_S + start + at)
            if best[0] == 0:
                return best
        return best
