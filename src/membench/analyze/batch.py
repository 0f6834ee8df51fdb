"""One batch of a profile as the numpy arrays the collectors count: each column converted once, nulls filled, and
the masks several collectors need (hits, misses, storage commands, answered operations) computed once.

Views are built in the reading thread, beside the counting one (numpy and pyarrow release the GIL), so only that
thread assigns the dictionary columns' global codes until the last batch is read."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from membench.analyze.counting import Codes, count_keys
from membench.profile.schema import Status
from membench.protocol.events import STORAGE_COMMANDS


@dataclass
class ColumnCodes:
    """Global codes of the dictionary columns, shared by all of a profile's batches."""

    commands: Codes = field(default_factory=Codes)
    statuses: Codes = field(default_factory=Codes)
    protocols: Codes = field(default_factory=Codes)


@dataclass(frozen=True)
class BatchView:
    batch: pa.RecordBatch  # the columns themselves, for collectors that read them with pyarrow
    timestamps: np.ndarray  # int64 ns
    connection: np.ndarray  # the profile's connection numbers
    command: np.ndarray  # global codes (Codes) of the command column
    command_names: tuple[str, ...]  # the name of each command code, as far as this batch needs them
    status: np.ndarray  # global codes of the status column
    protocol: np.ndarray  # global codes of the protocol column
    quiet: np.ndarray  # bool: a quiet request (false in parts written before the column existed)
    hit: np.ndarray  # bool per row
    miss: np.ndarray
    stored: np.ndarray  # a storage command
    value_length: np.ndarray  # int64, 0 where the row has none
    has_value: np.ndarray
    latency_us: np.ndarray  # int64, 0 where no reply was seen
    answered: np.ndarray
    key_hash: np.ndarray  # uint64, 0 where the row has no key
    keyed: np.ndarray
    bytes_read: np.ndarray  # value bytes each row returned (hits), else 0
    bytes_written: np.ndarray  # value bytes each row stored (storage commands), else 0
    key_counts: pa.Table  # each distinct key hash of the batch ("key") and its operations ("count")


def batch_view(batch: pa.RecordBatch, codes: ColumnCodes) -> BatchView:
    commands, statuses = codes.commands, codes.statuses
    command = commands.of(batch.column("command"))
    status = statuses.of(batch.column("status"))
    storage_codes = [commands.code(str(name)) for name in STORAGE_COMMANDS]
    storage = np.zeros(len(commands.names), dtype=bool)
    storage[storage_codes] = True
    value_length, has_value = filled_and_valid(batch.column("value_length"))
    latency, answered = filled_and_valid(batch.column("latency_us"))
    key_hash, keyed = filled_and_valid(batch.column("key_hash"))
    hit = status == statuses.code(str(Status.HIT))
    stored = storage[command]
    value_length = value_length.astype(np.int64, copy=False)
    quiet = batch.column("quiet")
    return BatchView(
        batch=batch,
        timestamps=batch.column("timestamp_ns").to_numpy(),
        connection=batch.column("connection").to_numpy(),
        command=command,
        command_names=tuple(commands.names),
        status=status,
        protocol=codes.protocols.of(batch.column("protocol")),
        quiet=(quiet.fill_null(False) if quiet.null_count else quiet).to_numpy(zero_copy_only=False),
        hit=hit,
        miss=status == statuses.code(str(Status.MISS)),
        stored=stored,
        value_length=value_length,
        has_value=has_value,
        latency_us=latency.astype(np.int64, copy=False),
        answered=answered,
        key_hash=key_hash.astype(np.uint64, copy=False),
        keyed=keyed,
        bytes_read=np.where(hit, value_length, 0),
        bytes_written=np.where(stored, value_length, 0),
        key_counts=count_keys(batch.column("key_hash")),
    )


def filled_and_valid(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The column with nulls as 0, and which of its rows are not null."""
    if column.null_count == 0:
        return column.to_numpy(zero_copy_only=False), np.ones(len(column), dtype=bool)
    valid = np.asarray(column.is_valid())
    return column.fill_null(0).to_numpy(zero_copy_only=False), valid
