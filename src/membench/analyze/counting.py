"""Counting helpers of the analysis: global codes for dictionary columns, operations per key hash, operations per
calendar second; each merges per-batch counts without a Python loop over rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UNKNOWN = "(unknown)"  # a dictionary column that an older part lacks
_MERGE_KEYS_AT = 1 << 22  # pending per-batch key counts are merged once they exceed this many entries
_NS_PER_S = 1_000_000_000


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


class SecondCounts:
    """Operations per calendar second, in an array that grows at either end as earlier or later seconds appear."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, timestamps_ns: np.ndarray) -> None:
        seconds = timestamps_ns // _NS_PER_S
        low = int(seconds.min())
        binned = np.bincount((seconds - low).astype(np.intp))
        if self.first is None:
            self.first, self.counts = low, binned.astype(np.int64)
            return
        start = min(self.first, low)
        end = max(self.first + self.counts.size, low + binned.size)
        if start != self.first or end != self.first + self.counts.size:
            grown = np.zeros(end - start, dtype=np.int64)
            grown[self.first - start: self.first - start + self.counts.size] = self.counts
            self.first, self.counts = start, grown
        self.counts[low - self.first: low - self.first + binned.size] += binned
