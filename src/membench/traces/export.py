"""Writing a profile as a public trace: libCacheSim's oracleGeneral, or Twitter-style CSV.

oracleGeneral: one 24-byte record per keyed operation, in profile order: the time in seconds since the profile's
first operation, the key hash as the object id, the size (the operation's value length, else the key's latest known
size, else 0), and next_access_vtime, the request number (0-based, in this file) of the key's next access, -1 when
there is none. The file is written in one forward pass; a key's previous record is patched in place when it is
accessed again (memory: one entry per distinct key, never per operation).
CSV: timestamp (s since the first operation), the key hash in hex as the anonymized key, key size, value size (0
where none), the connection as the client id, the command, the TTL (0 where none) - the columns of Twitter's
cache-trace.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa

from membench.errors import MembenchError
from membench.profile.reader import ProfileReader
from membench.profile.schema import UINT32_MAX
from membench.profile.timestamps import nanoseconds_since
from membench.traces.formats import ORACLE_RECORD

_COLUMNS = ["timestamp_ns", "connection", "command", "key_hash", "key_length", "value_length", "ttl"]
_NEXT_ACCESS = struct.Struct("<q")
_NEXT_ACCESS_OFFSET = 16


def export_oracle_general(reader: ProfileReader, output: Path) -> int:
    """Returns the records written."""
    first_ns = reader.metadata.start_ns or 0
    latest: dict[int, int] = {}  # key hash -> request number of its latest access
    sizes: dict[int, int] = {}
    written = 0
    with _created(output) as handle:
        for batch in reader.batches(_COLUMNS):
            keyed = np.asarray(batch.column("key_hash").is_valid())
            hashes = batch.column("key_hash").filter(pa.array(keyed)).to_pylist()
            times = _seconds_since(batch.column("timestamp_ns").to_numpy()[keyed], first_ns)
            values = batch.column("value_length").filter(pa.array(keyed)).to_pylist()
            records = np.zeros(len(hashes), dtype=ORACLE_RECORD)
            for index, (key, value) in enumerate(zip(hashes, values, strict=True)):
                number = written + index
                previous = latest.get(key)
                if previous is not None:
                    _patch_next(handle, previous, number, written)
                    if previous >= written:
                        records["next"][previous - written] = number
                latest[key] = number
                if value is not None:
                    sizes[key] = value
                records["id"][index] = key
                records["size"][index] = sizes.get(key, 0)
                records["next"][index] = -1
            records["time"] = times
            handle.write(records.tobytes())
            written += len(records)
    return written


def _seconds_since(timestamps_ns: np.ndarray, first_ns: int) -> np.ndarray:
    """Whole seconds from the first operation, within the format's uint32; a row before it counts as 0."""
    return np.minimum(nanoseconds_since(timestamps_ns, first_ns) // np.uint64(1_000_000_000), np.uint64(UINT32_MAX))


def _patch_next(handle: object, previous: int, number: int, written: int) -> None:
    """Set the next access of an already written record (earlier batches only: this batch's are in memory)."""
    if previous < written:
        os.pwrite(handle.fileno(), _NEXT_ACCESS.pack(number),  # type: ignore[attr-defined]
                  previous * ORACLE_RECORD.itemsize + _NEXT_ACCESS_OFFSET)


def export_csv(reader: ProfileReader, output: Path) -> int:
    first_ns = reader.metadata.start_ns or 0
    written = 0
    with _created(output) as handle:
        for batch in reader.batches(_COLUMNS):
            table = pa.Table.from_batches([batch]).to_pydict()
            lines = []
            for at, connection, command, key, key_length, value, ttl in zip(*table.values(), strict=True):
                lines.append(f"{(at - first_ns) // 1_000_000_000},{'' if key is None else f'{key:016x}'},"
                             f"{key_length or 0},{value or 0},{connection},{command},{ttl or 0}\n")
            handle.write("".join(lines).encode())
            written += len(lines)
    return written


def _created(output: Path):  # noqa: ANN202 - a binary file
    try:
        return output.open("wb")
    except OSError as error:
        raise MembenchError(f"cannot write {output}: {error.strerror or error}") from None
