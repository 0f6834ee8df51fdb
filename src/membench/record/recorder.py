"""Drives a capture: stream items from a source, through per-connection parsers and pairing, into the profile.

This is the one place where the sans-IO parsers meet time and I/O: the recorder feeds them bytes and holes,
hands their events to the pairer of the connection, and makes the profile writer flush at least every second
(from a background ticker, so an idle capture killed with SIGKILL still loses at most about the last second).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from membench.capture.stream import (
    ConnectionClosed,
    ConnectionOpened,
    Direction,
    StreamChunk,
    StreamSource,
)
from membench.errors import MembenchError
from membench.profile.writer import ProfileWriteError, ProfileWriter
from membench.protocol.events import ParserEvent, Request, Response, Skipped
from membench.protocol.stream import RequestStreamParser, ResponseStreamParser
from membench.record.anonymize import KeyHasher
from membench.record.pairing import ConnectionPairer, PairingStats

FLUSH_INTERVAL_S = 0.5
_REQUEST = Direction.REQUEST


@dataclass(slots=True)
class Progress:
    """What the live status line shows."""

    elapsed_s: float
    operations: int
    connections_open: int
    connections_total: int
    bytes_seen: int
    dropped_events: int


@dataclass
class RecordSummary:
    operations: int
    connections: int
    duration_s: float
    health: dict[str, dict[str, int]] = field(default_factory=dict)


class _Connection:
    __slots__ = ("next_offset", "number", "pairer", "request_parser", "response_parser")

    def __init__(self, number: int, pairer: ConnectionPairer, mid_stream: bool) -> None:
        self.number = number
        self.pairer = pairer
        # Joined mid-stream, the first byte may sit inside a command: the parsers must find their footing.
        self.request_parser = RequestStreamParser(mid_stream=mid_stream)
        self.response_parser = ResponseStreamParser(mid_stream=mid_stream)
        self.next_offset = [0, 0]  # per Direction: where the next chunk should start


class Recorder:
    """Records one source into one profile writer. `run()` returns when the source ends or is stopped."""

    def __init__(self, source: StreamSource, writer: ProfileWriter, hasher: KeyHasher,
                 on_progress: Callable[[Progress], None] | None = None) -> None:
        self._source = source
        self._writer = writer
        self._hasher = hasher
        self._on_progress = on_progress
        self._connections: dict[int, _Connection] = {}
        self._connection_count = 0
        self._next_batch = itertools.count(1).__next__  # request numbers, shared by all connections
        self._pairing = PairingStats()
        self._parser_totals: dict[str, int] = {}
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._done = threading.Event()
        self._failure: MembenchError | None = None  # what stopped the flush thread (a full disk, ...)

    def run(self) -> RecordSummary:
        ticker = threading.Thread(target=self._tick_forever, name="membench-flush", daemon=True)
        self._started = time.monotonic()
        ticker.start()
        try:
            return self._record(ticker)
        except ProfileWriteError as error:
            raise self._stopped_by(error) from None

    def _record(self, ticker: threading.Thread) -> RecordSummary:
        try:
            # Explicit acquire/release on bound methods: `with lock` costs about twice as much, once per item.
            acquire = self._lock.acquire
            release = self._lock.release
            on_chunk = self._on_chunk
            for item in self._source:
                acquire()
                try:
                    if type(item) is StreamChunk:
                        on_chunk(item)
                    elif type(item) is ConnectionOpened:
                        self._open(item.conn, item.mid_stream)
                    elif type(item) is ConnectionClosed:
                        self._close(item.conn, item.timestamp_ns)
                finally:
                    release()
        finally:
            self._done.set()
            ticker.join()
        if self._failure is not None:
            raise self._failure
        with self._lock:
            for conn in list(self._connections):
                self._close(conn, None)
            self._writer.set_health(self._health())
        return RecordSummary(
            operations=self._pairing.operations,
            connections=self._connection_count,
            duration_s=time.monotonic() - self._started,
            health=self._health(),
        )

    def stop(self) -> None:
        """Safe from a signal handler: the source ends its iteration and run() finishes the profile."""
        self._source.stop()

    def _tick_forever(self) -> None:
        while not self._done.wait(FLUSH_INTERVAL_S):
            with self._lock:
                try:
                    self._writer.set_health(self._health())
                    self._writer.tick()
                except Exception as error:
                    # Whatever it is, a flush thread that died silently would lose every row after it: stop
                    # recording, and say why, rather than capture what would be lost.
                    failure = error if isinstance(error, MembenchError) else MembenchError(
                        f"the profile writer failed ({type(error).__name__}: {error})")
                    self._failure = self._stopped_by(failure)
                    self._source.stop()
                    return
                progress = self._progress()
            if self._on_progress is not None:
                self._on_progress(progress)

    def _stopped_by(self, error: MembenchError) -> MembenchError:
        return MembenchError(f"{error}; recording stopped, the profile keeps the "
                             f"{self._writer.metadata.operations:,} operations written before")

    def _progress(self) -> Progress:
        health = self._source.health
        return Progress(
            elapsed_s=time.monotonic() - self._started,
            operations=self._pairing.operations,
            connections_open=len(self._connections),
            connections_total=self._connection_count,
            bytes_seen=health.bytes_seen,
            dropped_events=health.dropped_events,
        )

    def _open(self, conn: int, mid_stream: bool) -> _Connection:
        state = self._connections.get(conn)
        if state is None:
            number = self._connection_count
            self._connection_count += 1
            pairer = ConnectionPairer(number, self._hasher, self._writer.write, self._pairing, self._next_batch)
            state = self._connections[conn] = _Connection(number, pairer, mid_stream)
        return state

    def _on_chunk(self, chunk: StreamChunk) -> None:
        conn, direction, offset, data, length, ts = chunk
        state = self._connections.get(conn) or self._open(conn, mid_stream=True)
        is_request = direction == _REQUEST
        parser = state.request_parser if is_request else state.response_parser
        next_offset = state.next_offset
        expected = next_offset[direction]
        if offset == expected and len(data) == length:
            # The common case, without the list concatenation the irregular one needs.
            events = parser.receive(data, ts)
        else:
            events = []
            if offset > expected:
                events += parser.receive_hole(offset - expected, ts)
            elif offset < expected:
                # A source re-delivered bytes it had already given: keep only what is new.
                overlap = expected - offset
                if overlap >= length:
                    return
                data = data[overlap:]
                length -= overlap
                offset = expected
            if data:
                events += parser.receive(data, ts)
            if len(data) < length:
                events += parser.receive_hole(length - len(data), ts)
        next_offset[direction] = offset + length
        self._dispatch(state, events, is_request)

    def _dispatch(self, state: _Connection, events: list[ParserEvent], is_request: bool) -> None:
        pairer = state.pairer
        for event in events:
            kind = type(event)
            if kind is Request:
                pairer.on_request(event)
            elif kind is Response:
                pairer.on_response(event)
            elif kind is Skipped and not is_request:
                pairer.on_reply_hole()

    def _close(self, conn: int, timestamp_ns: int | None) -> None:
        state = self._connections.pop(conn, None)
        if state is None:
            return
        ts = timestamp_ns if timestamp_ns is not None else time.time_ns()
        self._dispatch(state, state.request_parser.close(ts), True)
        self._dispatch(state, state.response_parser.close(ts), False)
        state.pairer.close()
        _add_parser_stats(self._parser_totals, state)

    def _health(self) -> dict[str, dict[str, int]]:
        parser = dict(self._parser_totals)
        for state in self._connections.values():
            _add_parser_stats(parser, state)
        return {
            "capture": self._source.health.as_dict(),
            "parser": parser,
            "pairing": self._pairing.as_dict(),
            "writer": {"rows_rejected": self._writer.rows_rejected},
        }


def _add_parser_stats(totals: dict[str, int], state: _Connection) -> None:
    for stats, prefix in ((state.request_parser.stats, "request_"), (state.response_parser.stats, "response_")):
        for f in fields(stats):
            totals[prefix + f.name] = totals.get(prefix + f.name, 0) + getattr(stats, f.name)
