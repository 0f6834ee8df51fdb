"""`membench top`'s figures: the rows of the latest interval, summarized (sans-IO: rows in, a snapshot out).

The recorder hands this window its rows as it would hand them to a profile writer; `snapshot()` summarizes what
arrived since the previous snapshot (the rates are per second of that interval, like top's CPU column) and starts
a new interval. Nothing here is kept beyond one interval, so memory is bounded by one interval's rows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from membench.profile.schema import SCHEMA, Operation, Status


class KeyOrder(StrEnum):
    """What the hottest-keys table is sorted by."""

    OPERATIONS = "ops"
    BYTES = "bytes"
    MISSES = "misses"


class ConnectionOrder(StrEnum):
    """What the busiest-connections table is sorted by."""

    OPERATIONS = "ops"
    BYTES = "bytes"
    LATENCY = "p99"


@dataclass(frozen=True, slots=True)
class KeyLine:
    key_hash: int
    operations: int
    hits: int
    misses: int
    value_bytes: int


@dataclass(frozen=True, slots=True)
class ConnectionLine:
    connection: int  # the recording's connection number, in order of first appearance
    operations: int
    value_bytes: int
    latency_p99_us: float | None


@dataclass(frozen=True, slots=True)
class Latency:
    p50_us: float
    p99_us: float
    p999_us: float


@dataclass(frozen=True, slots=True)
class TopSnapshot:
    """One interval of traffic."""

    seconds: float
    operations: int
    hits: int
    misses: int
    value_bytes: int
    latency: Latency | None  # None when no reply was seen in the interval
    commands: tuple[tuple[str, int], ...]  # (command, operations), busiest first
    keys: tuple[KeyLine, ...]
    connections: tuple[ConnectionLine, ...]

    @property
    def operations_per_s(self) -> float:
        return self.operations / self.seconds if self.seconds > 0 else 0.0

    @property
    def hit_ratio(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None


class TopWindow:
    """A ProfileSink that keeps the rows of the current interval in memory instead of writing them."""

    rows_rejected = 0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: list[pa.Table] = []
        self._total = 0
        self.health: dict[str, dict[str, int]] = {}

    @property
    def operations_written(self) -> int:
        return self._total

    def write_columns(self, table: pa.Table) -> None:
        with self._lock:
            self._tables.append(table)
            self._total += table.num_rows

    def write_many(self, ops: list[Operation]) -> None:
        columns = list(zip(*ops, strict=True)) if ops else [[] for _ in SCHEMA]
        self.write_columns(pa.Table.from_arrays([pa.array(values, type=field.type) for values, field
                                                  in zip(columns, SCHEMA, strict=True)], schema=SCHEMA))

    def set_health(self, counters: dict[str, dict[str, int]]) -> None:
        self.health = counters

    def tick(self) -> None:
        """Nothing to put on disk."""

    def snapshot(self, seconds: float, key_order: KeyOrder = KeyOrder.OPERATIONS,
                 connection_order: ConnectionOrder = ConnectionOrder.OPERATIONS, limit: int = 10) -> TopSnapshot:
        """The interval that ends now (it lasted `seconds`), and a new one begins."""
        with self._lock:
            tables, self._tables = self._tables, []
        rows = pa.concat_tables(tables).combine_chunks() if tables else SCHEMA.empty_table()
        status = pc.cast(rows["status"], pa.string())
        is_hit = pc.cast(pc.equal(status, Status.HIT.value), pa.int64())
        is_miss = pc.cast(pc.equal(status, Status.MISS.value), pa.int64())
        value_bytes = pc.fill_null(rows["value_length"], 0)
        latency = rows["latency_us"].drop_null().to_numpy()
        return TopSnapshot(
            seconds=seconds,
            operations=rows.num_rows,
            hits=int(pc.sum(is_hit).as_py() or 0),
            misses=int(pc.sum(is_miss).as_py() or 0),
            value_bytes=int(pc.sum(value_bytes).as_py() or 0),
            latency=_latency(latency),
            commands=_commands(rows),
            keys=_hottest_keys(rows, is_hit, is_miss, value_bytes, key_order, limit),
            connections=_busiest_connections(rows, value_bytes, connection_order, limit),
        )


def _latency(values: np.ndarray) -> Latency | None:
    if not len(values):
        return None
    p50, p99, p999 = np.percentile(values, [50, 99, 99.9])
    return Latency(float(p50), float(p99), float(p999))


def _commands(rows: pa.Table) -> tuple[tuple[str, int], ...]:
    counts = pc.value_counts(pc.cast(rows["command"], pa.string())).to_pylist()
    return tuple(sorted(((entry["values"], entry["counts"]) for entry in counts), key=lambda c: (-c[1], c[0])))


def _hottest_keys(rows: pa.Table, is_hit: pa.ChunkedArray, is_miss: pa.ChunkedArray, value_bytes: pa.ChunkedArray,
                  order: KeyOrder, limit: int) -> tuple[KeyLine, ...]:
    table = pa.table({"key_hash": rows["key_hash"], "hit": is_hit, "miss": is_miss, "bytes": value_bytes})
    table = table.filter(pc.is_valid(table["key_hash"]))
    grouped = table.group_by("key_hash").aggregate([("key_hash", "count"), ("hit", "sum"), ("miss", "sum"),
                                                     ("bytes", "sum")])
    sort_column = {KeyOrder.OPERATIONS: "key_hash_count", KeyOrder.BYTES: "bytes_sum",
                   KeyOrder.MISSES: "miss_sum"}[order]
    top = _top(grouped, sort_column, "key_hash", limit)
    return tuple(KeyLine(key_hash=row["key_hash"], operations=row["key_hash_count"], hits=row["hit_sum"],
                         misses=row["miss_sum"], value_bytes=row["bytes_sum"]) for row in top)


def _busiest_connections(rows: pa.Table, value_bytes: pa.ChunkedArray, order: ConnectionOrder,
                         limit: int) -> tuple[ConnectionLine, ...]:
    table = pa.table({"connection": rows["connection"], "bytes": value_bytes,
                      "latency": pc.cast(rows["latency_us"], pa.float64())})
    grouped = table.group_by("connection").aggregate([
        ("connection", "count"), ("bytes", "sum"),
        ("latency", "tdigest", pc.TDigestOptions(q=0.99, skip_nulls=True)),
    ])
    grouped = grouped.append_column("p99", pc.list_element(grouped["latency_tdigest"], 0))
    sort_column = {ConnectionOrder.OPERATIONS: "connection_count", ConnectionOrder.BYTES: "bytes_sum",
                   ConnectionOrder.LATENCY: "p99"}[order]
    top = _top(grouped, sort_column, "connection", limit)
    return tuple(ConnectionLine(connection=row["connection"], operations=row["connection_count"],
                                value_bytes=row["bytes_sum"], latency_p99_us=_finite(row["p99"])) for row in top)


def _top(grouped: pa.Table, column: str, tie_breaker: str, limit: int) -> list[dict[str, Any]]:
    """The `limit` rows with the largest `column` (ties in the order of `tie_breaker`, so the view is stable)."""
    ordered = grouped.sort_by([(column, "descending"), (tie_breaker, "ascending")])
    return ordered.slice(0, limit).to_pylist()


def _finite(value: object) -> float | None:
    return value if isinstance(value, float) and np.isfinite(value) else None
