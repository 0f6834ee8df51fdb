"""Synthetic profiles for replay tests: operations in, a BatchSource of schema.SCHEMA batches out."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from membench.profile.metadata import ProfileMetadata
from membench.profile.schema import SCHEMA, Operation
from membench.profile.writer import ProfileWriter
from membench.replay.survey import BatchSource

T0 = 1_700_000_000_000_000_000


def table(operations: Sequence[Operation]) -> pa.Table:
    if not operations:
        return SCHEMA.empty_table()
    columns = list(zip(*operations, strict=True))
    arrays = []
    for values, field in zip(columns, SCHEMA, strict=True):
        if pa.types.is_dictionary(field.type):
            arrays.append(pa.array(list(values), type=pa.string()).dictionary_encode().cast(field.type))
        else:
            arrays.append(pa.array(list(values), type=field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def source(operations: Sequence[Operation], batch_size: int = 1000) -> BatchSource:
    data = table(operations)

    def batches() -> Iterator[pa.RecordBatch]:
        yield from data.to_batches(max_chunksize=batch_size)

    return batches


class ProfileBuilder:
    """Appends operations with consecutive batches and timestamps `gap_us` apart."""

    def __init__(self, protocol: str = "text", gap_us: int = 100, latency_us: int = 50) -> None:
        self.protocol = protocol
        self.gap_us = gap_us
        self.latency_us = latency_us
        self.operations: list[Operation] = []
        self._batch = 0
        self._time = T0

    def add(self, command: str, keys: Sequence[int] = (), *, connection: int = 0, status: str = "ok",
            statuses: Sequence[str] | None = None, value_length: int | None = None, key_length: int = 20,
            quiet: bool = False, protocol: str | None = None, at_ns: int | None = None,
            latency_us: int | None = None) -> None:
        self._batch += 1
        timestamp = at_ns if at_ns is not None else self._time
        self._time = timestamp + self.gap_us * 1000
        latency = None if quiet else (latency_us if latency_us is not None else self.latency_us)
        for index, key in enumerate(keys or [None]):
            self.operations.append(Operation(
                timestamp, connection, command, protocol or self.protocol, key,
                key_length if key is not None else None, value_length, 0 if value_length is not None else None,
                0 if value_length is not None else None, statuses[index] if statuses else status, latency,
                self._batch, quiet))

    def source(self) -> BatchSource:
        return source(self.operations)


def write_profile(path: Path, operations: Sequence[Operation]) -> Path:
    """A profile directory on disk, as `membench record` writes it."""
    with ProfileWriter(path, ProfileMetadata(source="test")) as writer:
        writer.write_many(operations)
    return path


def mixed_profile(protocol: str, connections: int = 3) -> ProfileBuilder:
    """Statuses are those a fresh server gives after warm-up: the replay must reproduce every one."""
    profile = ProfileBuilder(protocol=protocol)
    for key in range(50):
        profile.add("get", [key], status="hit", value_length=100, connection=key % connections)
    for key in range(100, 150):
        profile.add("get", [key], status="miss", connection=key % connections)
    profile.add("get", [0, 1, 100], statuses=["hit", "hit", "miss"], value_length=100, connection=0)
    for key in range(200, 230):
        profile.add("set", [key], status="stored", value_length=40, connection=key % connections)
    profile.add("add", [0], status="not_stored", value_length=10, connection=0)
    for key in range(200, 210):
        profile.add("delete", [key], status="deleted", connection=key % connections)
    profile.add("delete", [300], status="not_found", connection=1)
    profile.add("incr", [210], status="ok", connection=210 % connections)
    profile.add("incr", [400], status="not_found", connection=2)
    profile.add("touch", [211], status="touched", connection=211 % connections)
    profile.add("touch", [401], status="not_found", connection=2)
    for key in range(500, 510):
        profile.add("set", [key], status="stored", value_length=8, quiet=True, connection=key % connections)
    for connection in range(connections):
        profile.add("noop" if protocol == "binary" else ("mn" if protocol == "meta" else "version"),
                    connection=connection)
    return profile
