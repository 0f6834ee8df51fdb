"""Reading public cache traces as TraceRows: libCacheSim's oracleGeneral, Twitter's cache-trace CSV and CacheLib's
kvtrace CSV. What each field becomes:

- oracleGeneral (24-byte little-endian records: uint32 time in s, uint64 object id, uint32 object size, int64
  next access): every record is a `get` of the object that hits with the object's size (the format has no
  operations and no misses; a replay's warm-up then stores each object at its size); one connection (0), since
  the format names no client; the next-access field is derived data and is not kept.
- Twitter (timestamp s, anonymized key, key size, value size, client id, operation, TTL; no header): the operation
  as is; a retrieval with value size 0 is a miss, any other a hit with that size; storage commands are stored,
  deletes deleted, incr/decr ok; a connection per client id, numbered in order of appearance; TTL on writes.
- kvtrace (a header names the columns: key, op, size, op_count, key_size, and optionally op_time, cache_hits, ttl):
  each line is op_count requests; GET/GET_LEASE are gets, cache_hits of them hits (all hits when the column is
  absent), SET/SET_LEASE sets, DELETE deletes; one connection (0); without op_time, requests are 1 µs apart; a
  line expands into at most MAX_OP_COUNT requests.
A line or record that cannot be read is counted in the profile's health (`import` section), never dropped silently;
so are values past their column (imported at the column's nearest value) and requests past the op_count cap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from membench.errors import MembenchError
from membench.traces.rows import TraceRow

ORACLE_RECORD = np.dtype([("time", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")])
_CHUNK_RECORDS = 1 << 16
# A kvtrace line stands for op_count requests: a line claiming more than this (a corrupt count, 60 bytes for
# terabytes of profile) is imported with this many, the rest counted in health.
MAX_OP_COUNT = 1_000_000
_NS_PER_S = 1_000_000_000
_TWITTER_OPERATIONS = {"get": "hit", "gets": "hit", "set": "stored", "add": "stored", "replace": "stored",
                       "cas": "stored", "append": "stored", "prepend": "stored", "delete": "deleted",
                       "incr": "ok", "decr": "ok"}
_KVTRACE_OPERATIONS = {"GET": "get", "GET_LEASE": "get", "SET": "set", "SET_LEASE": "set", "DELETE": "delete"}


def oracle_general(path: Path, problems: Counter[str]) -> Iterator[TraceRow]:
    with _opened(path, "rb") as trace:
        while chunk := trace.read(_CHUNK_RECORDS * ORACLE_RECORD.itemsize):
            whole = len(chunk) // ORACLE_RECORD.itemsize * ORACLE_RECORD.itemsize
            if whole < len(chunk):
                problems["truncated_record_bytes"] += len(chunk) - whole
            records = np.frombuffer(chunk[:whole], dtype=ORACLE_RECORD)
            for time, identity, size in zip(records["time"].tolist(), records["id"].tolist(),
                                            records["size"].tolist(), strict=True):
                yield TraceRow(timestamp_ns=time * _NS_PER_S, connection=0, command="get",
                               key=identity.to_bytes(8, "little"), key_length=8, value_length=size, ttl=None,
                               status="hit")


def twitter(path: Path, problems: Counter[str]) -> Iterator[TraceRow]:
    clients: dict[str, int] = {}
    with _opened(path, "r") as trace:
        for line in trace:
            fields = line.rstrip("\r\n").split(",")
            row = _twitter_row(fields, clients) if len(fields) >= 7 else None
            if row is None:
                problems["unreadable_lines" if len(fields) < 7 or fields[-2] in _TWITTER_OPERATIONS
                         else "unknown_operations"] += 1
                continue
            yield row


def _twitter_row(fields: list[str], clients: dict[str, int]) -> TraceRow | None:
    # A key may itself hold commas: the fields around it are fixed, so it is whatever lies between them.
    timestamp, key, (key_size, value_size, client, operation, ttl) = fields[0], ",".join(fields[1:-5]), fields[-5:]
    status = _TWITTER_OPERATIONS.get(operation)
    if status is None:
        return None
    try:
        seconds, key_length, value_length, expiry = int(timestamp), int(key_size), int(value_size), int(ttl)
    except ValueError:
        return None
    if status == "hit" and value_length == 0:
        status = "miss"
    connection = clients.setdefault(client, len(clients))
    retrieval = operation in ("get", "gets")
    return TraceRow(timestamp_ns=seconds * _NS_PER_S, connection=connection, command=operation,
                    key=key.encode("utf-8", "surrogateescape"), key_length=key_length,
                    value_length=value_length if status in ("hit", "stored") else None,
                    ttl=None if retrieval or status != "stored" else expiry, status=status)


def kvtrace(path: Path, problems: Counter[str]) -> Iterator[TraceRow]:
    with _opened(path, "r") as trace:
        columns = {name.strip(): index for index, name in enumerate(trace.readline().rstrip("\r\n").split(","))}
        missing = {"key", "op"} - columns.keys()
        if missing:
            raise MembenchError(f"{path}: not a kvtrace file: its header lacks {', '.join(sorted(missing))}")
        previous_ns = 0
        for line in trace:
            fields = line.rstrip("\r\n").split(",")
            try:
                request = _kvtrace_request(fields, columns)
            except (ValueError, IndexError):
                problems["unreadable_lines"] += 1
                continue
            if request is None:
                problems["unknown_operations"] += 1
                continue
            command, key, size, count, hits, key_length, op_time, ttl = request
            if count > MAX_OP_COUNT:
                problems["operations_past_the_op_count_cap"] += count - MAX_OP_COUNT
                count = MAX_OP_COUNT
            if not 0 <= hits <= count:  # more hits than requests, or fewer than none: the nearest that can be
                problems["values_out_of_range"] += 1
                hits = min(max(hits, 0), count)
            for index in range(count):
                previous_ns = op_time * _NS_PER_S if op_time is not None else previous_ns + 1000
                hit = index < hits
                status = ("hit" if hit else "miss") if command == "get" else "stored" if command == "set" \
                    else "deleted"
                yield TraceRow(timestamp_ns=previous_ns, connection=0, command=command, key=key,
                               key_length=key_length, value_length=size if status in ("hit", "stored") else None,
                               ttl=ttl if command == "set" else None, status=status)


def _kvtrace_request(fields: list[str], columns: dict[str, int]
                     ) -> tuple[str, bytes, int, int, int, int, int | None, int | None] | None:
    command = _KVTRACE_OPERATIONS.get(fields[columns["op"]])
    if command is None:
        return None
    key = fields[columns["key"]].encode("utf-8", "surrogateescape")

    def number(name: str, default: int | None) -> int | None:
        return int(fields[columns[name]]) if name in columns and fields[columns[name]] != "" else default

    count = number("op_count", 1) or 0
    if count < 0:
        raise ValueError("a negative op_count")
    return (command, key, number("size", 0) or 0, count, number("cache_hits", count) or 0,
            number("key_size", len(key)) or 0, number("op_time", None), number("ttl", None))


def _opened(path: Path, mode: str):  # noqa: ANN202 - a text or binary file, as `mode` says
    try:
        # A key that is not UTF-8 keeps its own bytes (surrogateescape gives them back), so distinct keys stay
        # distinct; a byte order mark (spreadsheet exports) is not part of the first field.
        return path.open(mode, **({} if "b" in mode else {"encoding": "utf-8-sig", "errors": "surrogateescape"}))
    except OSError as error:
        raise MembenchError(f"cannot read trace {path}: {error.strerror or error}") from None
