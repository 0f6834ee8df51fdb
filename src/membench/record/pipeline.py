"""The record pipeline of one capture, sans-IO: stream items in, profile rows out.

It owns, per connection, the two direction parsers and the pairer, and turns chunks (with holes made visible by
their offsets) into operations; the recorder around it does the I/O (the source, the clock, the writer's disk).
This Python class is the specification; `record/_core.pyx` is its compiled twin, which takes the same calls and
gives the same rows as columns, without a Python object per operation. `new_pipeline()` picks the twin unless
MEMBENCH_NO_EXTENSIONS=1 is set, and the differential tests hold the two equal row for row.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import fields
from typing import Any, Protocol

import pyarrow as pa

from membench.capture.stream import Direction
from membench.extensions import compiled
from membench.profile.schema import Operation
from membench.protocol.events import ParserEvent, Request, Response, Skipped
from membench.protocol.stream import RequestStreamParser, ResponseStreamParser
from membench.record.anonymize import KeyHasher
from membench.record.pairing import ConnectionPairer, PairingStats


class RowSink(Protocol):
    """Where finished rows go: the profile writer."""

    def write_many(self, ops: list[Operation]) -> None: ...

    def write_columns(self, table: pa.Table) -> None: ...


class _Connection:
    """What the pipeline keeps of one connection: its number, parsers, pairer and where each direction is."""

    __slots__ = ("next_offset", "number", "pairer", "request_parser", "response_parser")

    def __init__(self, number: int, pairer: ConnectionPairer, mid_stream: bool) -> None:
        self.number = number
        self.pairer = pairer
        # Joined mid-stream, the first byte may sit inside a command: the parsers must find their footing.
        self.request_parser = RequestStreamParser(mid_stream=mid_stream)
        self.response_parser = ResponseStreamParser(mid_stream=mid_stream)
        self.next_offset = [0, 0]  # per Direction: where the next chunk should start


class RecordPipeline:
    """Connections, parsers and pairing of one capture; rows are buffered until `flush_to()` hands them over."""

    def __init__(self, hasher: KeyHasher) -> None:
        self._hasher = hasher
        self._connections: dict[int, _Connection] = {}
        self._connection_count = 0
        self._next_batch = itertools.count(1).__next__  # request numbers, shared by all connections
        self._pairing = PairingStats()
        self._parser_totals: dict[str, int] = {}
        self._rows: list[Operation] = []

    @property
    def operations(self) -> int:
        return self._pairing.operations

    @property
    def connections_open(self) -> int:
        return len(self._connections)

    @property
    def connections_total(self) -> int:
        return self._connection_count

    @property
    def buffered_rows(self) -> int:
        return len(self._rows)

    def open(self, conn: int, mid_stream: bool) -> None:
        """A connection became known (at its handshake, or joined mid-stream); a second call changes nothing."""
        self._state(conn, mid_stream)

    def chunk(self, conn: int, direction: int, offset: int, data: bytes, length: int, timestamp_ns: int) -> None:
        """Bytes at `offset` of one direction; `len(data) < length` and offset jumps are holes."""
        state = self._connections.get(conn) or self._state(conn, mid_stream=True)
        is_request = direction == Direction.REQUEST
        parser = state.request_parser if is_request else state.response_parser
        expected = state.next_offset[direction]
        events: list[ParserEvent] = []
        if offset > expected:
            events += parser.receive_hole(offset - expected, timestamp_ns)
        elif offset < expected:
            # A source re-delivered bytes it had already given: keep only what is new.
            overlap = expected - offset
            if overlap >= length:
                return
            data = data[overlap:]
            length -= overlap
            offset = expected
        if data:
            events += parser.receive(data, timestamp_ns)
        if len(data) < length:
            events += parser.receive_hole(length - len(data), timestamp_ns)
        state.next_offset[direction] = offset + length
        self._dispatch(state, events, is_request)

    def close(self, conn: int, timestamp_ns: int) -> None:
        """The connection ended: what its parsers hold is settled, and what is still pending is unanswered."""
        state = self._connections.pop(conn, None)
        if state is None:
            return
        self._dispatch(state, state.request_parser.close(timestamp_ns), True)
        self._dispatch(state, state.response_parser.close(timestamp_ns), False)
        state.pairer.close()
        _add_parser_stats(self._parser_totals, state)

    def close_all(self, timestamp_ns: int) -> None:
        for conn in list(self._connections):
            self.close(conn, timestamp_ns)

    def flush_to(self, sink: RowSink) -> None:
        """Hand the buffered rows to the writer."""
        if self._rows:
            sink.write_many(self._take())

    def take_rows(self) -> list[tuple[Any, ...]]:
        """The buffered rows as plain tuples, in profile column order (for tests that compare pipelines)."""
        return [tuple(row) for row in self._take()]

    def keys_for(self, hashes: Iterable[int]) -> dict[int, bytes]:
        """The remembered keys behind `hashes` (see KeyHasher.keys_for)."""
        return self._hasher.keys_for(hashes)

    def health(self) -> tuple[dict[str, int], dict[str, int]]:
        """(parser, pairing) counters, as of now."""
        parser = dict(self._parser_totals)
        for state in self._connections.values():
            _add_parser_stats(parser, state)
        return parser, self._pairing.as_dict()

    def _take(self) -> list[Operation]:
        # Emptied in place: every pairer holds this list's append method.
        rows = self._rows.copy()
        self._rows.clear()
        return rows

    def _state(self, conn: int, mid_stream: bool) -> _Connection:
        state = self._connections.get(conn)
        if state is None:
            number = self._connection_count
            self._connection_count += 1
            pairer = ConnectionPairer(number, self._hasher, self._rows.append, self._pairing, self._next_batch)
            state = self._connections[conn] = _Connection(number, pairer, mid_stream)
        return state

    def _dispatch(self, state: _Connection, events: list[ParserEvent], is_request: bool) -> None:
        pairer = state.pairer
        for event in events:
            if isinstance(event, Request):
                pairer.on_request(event)
            elif isinstance(event, Response):
                pairer.on_response(event)
            elif isinstance(event, Skipped) and not is_request:
                pairer.on_reply_hole()


def _add_parser_stats(totals: dict[str, int], state: _Connection) -> None:
    for stats, prefix in ((state.request_parser.stats, "request_"), (state.response_parser.stats, "response_")):
        for f in fields(stats):
            totals[prefix + f.name] = totals.get(prefix + f.name, 0) + getattr(stats, f.name)


def new_pipeline(hasher: KeyHasher, *, remember_keys: bool = False) -> Any:
    """The compiled twin of RecordPipeline where it is built and allowed, else the Python specification.

    `remember_keys` keeps recent keys in the compiled pipeline for keys_for (`membench top --show-keys`); the
    specification's hasher always remembers them."""
    core = compiled("membench.record._core")
    if core is None:
        return RecordPipeline(hasher)
    return core.RecordPipeline(hasher.salt, remember_keys)
