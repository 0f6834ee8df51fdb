"""Per-connection breakdown: what each recorded connection did, counted per batch with numpy.

Memory is a few arrays with a slot per connection, so bounded by the number of connections, not of operations.
The busiest connections are reported in full; the rest only in the distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from membench.analyze.batch import BatchView
from membench.analyze.histogram import CountHistogram, Distribution
from membench.extensions import compiled

BUSIEST_REPORTED = 20
DENSE_CONNECTIONS = 1 << 22  # 4M connections: 300 MB of tables at most
_NS_PER_S = 1_000_000_000
# Columns of the per-connection table: operations, hits, misses, value bytes read by hits, value bytes written by
# storage commands, latency sum (µs), answered operations.
_OPERATIONS, _HITS, _MISSES, _READ, _WRITTEN, _LATENCY_SUM, _ANSWERED = range(7)
_COLUMNS = 7


@dataclass
class ConnectionLine:
    connection: int  # the profile's connection number
    operations: int
    share: float  # of all operations
    hit_ratio: float | None  # hits / (hits + misses); None without either
    bytes_read: int  # value bytes returned by hits
    bytes_written: int  # value bytes sent by storage commands
    mean_latency_us: float | None  # over the operations that saw a reply
    first_ns: int
    last_ns: int


@dataclass
class Connections:
    count: int
    busiest_share: float | None  # of operations, on the busiest connection
    operations_per_connection: Distribution
    busiest: list[ConnectionLine]  # the BUSIEST_REPORTED connections with the most operations, busiest first


def specification(connection: np.ndarray, view: BatchView, table: np.ndarray, first: np.ndarray,
                  last: np.ndarray) -> None:
    """Adds a batch's rows to the per-connection tables, in place: `table` (the _COLUMNS counts and sums), `first`
    and `last` (the earliest and latest timestamp); `connection` is each row's connection number. The compiled
    twin (_connections.pyx) does the same in one pass over the rows."""
    size = len(first)
    outcome = view.hit.astype(np.intp) + 2 * view.miss
    cells = np.bincount(connection * 3 + outcome, minlength=3 * size).reshape(size, 3)
    table[:, _OPERATIONS] += cells.sum(axis=1)
    table[:, _HITS] += cells[:, 1]
    table[:, _MISSES] += cells[:, 2]
    for column, weights in ((_READ, view.bytes_read), (_WRITTEN, view.bytes_written),
                            (_LATENCY_SUM, view.latency_us)):
        table[:, column] += np.rint(np.bincount(connection, weights=weights, minlength=size)).astype(np.int64)
    table[:, _ANSWERED] += np.bincount(connection[view.answered], minlength=size)
    np.minimum.at(first, connection, view.timestamps)
    np.maximum.at(last, connection, view.timestamps)


class ConnectionCollector:
    """The tables have a slot per connection. The recorder, merge and import number connections densely from 0,
    so a connection's number is its slot; numbers past DENSE_CONNECTIONS (a damaged or foreign profile) would make
    that table huge, and from the first of them on, slots are handed out in order of appearance instead."""

    def __init__(self) -> None:
        self._table = np.zeros((0, _COLUMNS), dtype=np.int64)
        self._first = np.zeros(0, dtype=np.int64)
        self._last = np.zeros(0, dtype=np.int64)
        self._numbers = np.zeros(0, dtype=np.int64)  # the connection number of each slot
        self._slot_of: dict[int, int] | None = None  # once numbers are not slots
        self.operations = 0

    def add(self, view: BatchView) -> None:
        connection = view.connection.astype(np.intp, copy=False)
        if self._slot_of is None and int(connection.max()) < DENSE_CONNECTIONS:
            slots = connection
            self._grow(np.arange(len(self._numbers), int(connection.max()) + 1))
        else:
            slots = self._assigned_slots(connection)
        self.operations += len(connection)
        count_rows(slots, view, self._table, self._first, self._last)

    def _assigned_slots(self, connection: np.ndarray) -> np.ndarray:
        if self._slot_of is None:
            self._slot_of = {int(number): slot for slot, number in enumerate(self._numbers)}
        numbers, row_number = np.unique(connection, return_inverse=True)
        new = [int(number) for number in numbers if int(number) not in self._slot_of]
        self._slot_of.update((number, len(self._numbers) + index) for index, number in enumerate(new))
        self._grow(np.array(new, dtype=np.int64))
        slots = np.array([self._slot_of[int(number)] for number in numbers], dtype=np.intp)
        return slots[row_number]

    def _grow(self, numbers: np.ndarray) -> None:
        """Adds a slot for each connection number."""
        extra = len(numbers)
        if extra == 0:
            return
        self._table = np.vstack([self._table, np.zeros((extra, _COLUMNS), dtype=np.int64)])
        self._first = np.concatenate([self._first, np.full(extra, np.iinfo(np.int64).max, dtype=np.int64)])
        self._last = np.concatenate([self._last, np.full(extra, np.iinfo(np.int64).min, dtype=np.int64)])
        self._numbers = np.concatenate([self._numbers, numbers.astype(np.int64)])

    def connections(self) -> Connections:
        operations = self._table[:, _OPERATIONS]
        used = np.flatnonzero(operations > 0)
        spread = CountHistogram()
        spread.add(operations[used])
        busiest = used[np.lexsort((self._numbers[used], -operations[used]))][:BUSIEST_REPORTED]
        return Connections(
            count=int(used.size),
            busiest_share=int(operations[used].max()) / self.operations if used.size else None,
            operations_per_connection=spread.distribution(),
            busiest=[self._line(int(slot)) for slot in busiest],
        )

    def _line(self, slot: int) -> ConnectionLine:
        row = self._table[slot]
        looked_up = int(row[_HITS] + row[_MISSES])
        return ConnectionLine(
            connection=int(self._numbers[slot]), operations=int(row[_OPERATIONS]),
            share=int(row[_OPERATIONS]) / self.operations,
            hit_ratio=int(row[_HITS]) / looked_up if looked_up else None,
            bytes_read=int(row[_READ]), bytes_written=int(row[_WRITTEN]),
            mean_latency_us=int(row[_LATENCY_SUM]) / int(row[_ANSWERED]) if row[_ANSWERED] else None,
            first_ns=int(self._first[slot]), last_ns=int(self._last[slot]),
        )


_twin = compiled("membench.analyze._connections")
count_rows: Callable[[np.ndarray, BatchView, np.ndarray, np.ndarray, np.ndarray], None] = (
    specification if _twin is None else _twin.count_rows)
