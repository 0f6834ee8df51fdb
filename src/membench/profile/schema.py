"""The one schema of a membench profile: one row per key operation.

A multi-key get becomes one row per key, all sharing the `batch` of the request they came in. Keys and values
never appear: a key is its keyed 64-bit hash plus its length, a value is its length.

Compatibility rule: later versions may add columns and status values; they never rename, retype or remove one.
`SCHEMA_VERSION` counts such additions; readers accept any version up to their own and fill absent columns with
nulls.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

import pyarrow as pa

SCHEMA_VERSION = 3  # 2 added effect, delta, initial; 3 hashes keys with SipHash-2-4 instead of keyed BLAKE2b
FORMAT_NAME = "membench-profile"


class Status(StrEnum):
    """The outcome of one operation, as the recording saw it."""

    HIT = "hit"
    MISS = "miss"
    STORED = "stored"
    NOT_STORED = "not_stored"
    EXISTS = "exists"
    NOT_FOUND = "not_found"
    DELETED = "deleted"
    TOUCHED = "touched"
    OK = "ok"  # successful incr/decr and keyless commands (version, stats, flush_all, noop, ...)
    ERROR = "error"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"
    NOREPLY = "noreply"  # sent with text `noreply`: the outcome was never visible
    UNANSWERED = "unanswered"  # a reply was due but never seen (connection closed, capture ended, hole)


class Operation(NamedTuple):
    """One row of the profile, as the recorder hands it to the writer."""

    timestamp_ns: int  # when the request's first byte was seen, ns since the Unix epoch
    connection: int  # profile-local connection number, 0-based in order of first appearance
    command: str  # membench.protocol.events.Command value
    protocol: str  # membench.protocol.events.Protocol value
    key_hash: int | None  # keyed 64-bit hash of the key (unsigned); None for keyless commands
    key_length: int | None
    value_length: int | None  # stored value for storage commands, returned value for hits
    flags: int | None
    ttl: int | None
    status: str  # Status value
    latency_us: int | None  # reply start - request end, µs; None when no reply was seen
    batch: int  # sequence number of the request this operation belongs to (shared by a multi-get's keys)
    quiet: bool  # sent with noreply, meta q, or a binary quiet opcode
    # Added in schema version 2 (defaults keep writers of version-1 rows working):
    effect: str | None = None  # meta commands: the Command value with the same effect on the server (ms MA -> append)
    delta: int | None = None  # incr/decr/ma: the amount
    initial: int | None = None  # counters that create a missing key (binary with an expiration, ma N): the first value


# The ranges of the integer columns below (and of the metadata's counters and timestamps).
UINT32_MAX = (1 << 32) - 1
UINT64_MAX = (1 << 64) - 1
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def _dictionary() -> pa.DataType:
    return pa.dictionary(pa.int8(), pa.string())


SCHEMA = pa.schema(
    [
        pa.field("timestamp_ns", pa.int64(), nullable=False),
        pa.field("connection", pa.uint32(), nullable=False),
        pa.field("command", _dictionary(), nullable=False),
        pa.field("protocol", _dictionary(), nullable=False),
        pa.field("key_hash", pa.uint64()),
        pa.field("key_length", pa.uint16()),
        pa.field("value_length", pa.uint32()),
        pa.field("flags", pa.uint32()),
        pa.field("ttl", pa.int64()),
        pa.field("status", _dictionary(), nullable=False),
        pa.field("latency_us", pa.uint32()),
        pa.field("batch", pa.uint64(), nullable=False),
        pa.field("quiet", pa.bool_(), nullable=False),
        pa.field("effect", _dictionary()),
        pa.field("delta", pa.uint64()),
        pa.field("initial", pa.uint64()),
    ]
)

COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
