"""Drives a capture: stream items from a source, through the record pipeline, into the profile.

This is where the sans-IO pipeline (parsers and pairing, record/pipeline.py or its compiled twin) meets time and
I/O: the recorder feeds it the source's items, and a background ticker hands its rows to the profile writer at
least every second, so an idle capture killed with SIGKILL still loses at most about the last second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from membench.capture.stream import ConnectionClosed, ConnectionOpened, StreamChunk, StreamSource
from membench.errors import MembenchError
from membench.profile.schema import Operation
from membench.profile.writer import ProfileWriteError
from membench.record.anonymize import KeyHasher
from membench.record.pipeline import RecordPipeline, RowSink, new_pipeline

FLUSH_INTERVAL_S = 0.5


class ProfileSink(RowSink, Protocol):
    """Where a recording's rows go: the profile writer, or `membench top`'s window."""

    rows_rejected: int

    @property
    def operations_written(self) -> int: ...

    def set_health(self, counters: dict[str, dict[str, int]]) -> None: ...

    def tick(self) -> None: ...


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


class Recorder:
    """Records one source into one profile writer. `run()` returns when the source ends or is stopped."""

    def __init__(self, source: StreamSource, writer: ProfileSink, hasher: KeyHasher,
                 on_progress: Callable[[Progress], None] | None = None, *, remember_keys: bool = False) -> None:
        self._source = source
        self._writer = writer
        self._on_progress = on_progress
        self._pipeline = new_pipeline(hasher, remember_keys=remember_keys)
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._done = threading.Event()
        self._failure: MembenchError | None = None  # what stopped the flush thread (a full disk, ...)
        self._ticker = threading.Thread(target=self._tick_forever, name="membench-flush", daemon=True)

    def run(self) -> RecordSummary:
        self._started = time.monotonic()
        self._ticker.start()
        try:
            return self._record()
        except ProfileWriteError as error:
            raise self._stopped_by(error) from None

    def _record(self) -> RecordSummary:
        try:
            self._consume_source()
        except ProfileWriteError:
            raise
        except MembenchError as error:
            # The source's input ended in something unreadable (a corrupt capture file): what it delivered before
            # is in the pipeline, and is written before the error is told.
            if self._failure is not None:
                raise self._failure from None
            self._finish()
            raise MembenchError(f"{error}; the {self._pipeline.operations:,} operations before it are kept") from None
        if self._failure is not None:
            raise self._failure
        self._finish()
        return RecordSummary(
            operations=self._pipeline.operations,
            connections=self._pipeline.connections_total,
            duration_s=time.monotonic() - self._started,
            health=self._health(),
        )

    def _consume_source(self) -> None:
        try:
            feed = getattr(self._source, "feed", None)
            if feed is not None and not isinstance(self._pipeline, RecordPipeline):
                # The compiled pipeline decodes the source's records (ring records, packets) itself.
                feed(self._pipeline, self._lock)
            else:
                self._consume_items()
        finally:
            self._done.set()
            self._ticker.join()

    def _finish(self) -> None:
        """Ends the connections still open and writes every row the pipeline holds, with the health so far."""
        with self._lock:
            self._pipeline.close_all(time.time_ns())
            self._pipeline.flush_to(self._writer)
            self._writer.set_health(self._health())

    def _consume_items(self) -> None:
        # Explicit acquire/release on bound methods: `with lock` costs about twice as much, once per item.
        acquire = self._lock.acquire
        release = self._lock.release
        pipeline = self._pipeline
        chunk = pipeline.chunk
        for item in self._source:
            acquire()
            try:
                if type(item) is StreamChunk:
                    chunk(*item)
                elif type(item) is ConnectionOpened:
                    pipeline.open(item.conn, item.mid_stream)
                elif type(item) is ConnectionClosed:
                    pipeline.close(item.conn, item.timestamp_ns)
            finally:
                release()

    def keys_for(self, hashes: Iterable[int]) -> dict[int, bytes]:
        """The keys behind `hashes` that the pipeline's hasher still remembers (for `membench top --show-keys`)."""
        with self._lock:
            return self._pipeline.keys_for(hashes)

    def stop(self) -> None:
        """Safe from a signal handler: the source ends its iteration and run() finishes the profile."""
        self._source.stop()

    def _tick_forever(self) -> None:
        while not self._done.wait(FLUSH_INTERVAL_S):
            # Only taking the rows and the counters needs the pipeline: encoding and writing a part (tens of ms)
            # happen after the lock is released, so the source keeps draining meanwhile.
            handoff = _Handoff()
            try:
                with self._lock:
                    self._pipeline.flush_to(handoff)
                    health = self._health()
                    progress = self._progress()
                handoff.write_into(self._writer)
                self._writer.set_health(health)
                self._writer.tick()
            except Exception as error:
                # Whatever it is, a flush thread that died silently would lose every row after it: stop
                # recording, and say why, rather than capture what would be lost.
                failure = error if isinstance(error, MembenchError) else MembenchError(
                    f"the profile writer failed ({type(error).__name__}: {error})")
                self._failure = self._stopped_by(failure)
                self._source.stop()
                return
            if self._on_progress is not None:
                self._on_progress(progress)

    def _stopped_by(self, error: MembenchError) -> MembenchError:
        return MembenchError(f"{error}; recording stopped, the profile keeps the "
                             f"{self._writer.operations_written:,} operations written before")

    def _progress(self) -> Progress:
        health = self._source.health
        return Progress(
            elapsed_s=time.monotonic() - self._started,
            operations=self._pipeline.operations,
            connections_open=self._pipeline.connections_open,
            connections_total=self._pipeline.connections_total,
            bytes_seen=health.bytes_seen,
            dropped_events=health.dropped_events,
        )

    def _health(self) -> dict[str, dict[str, int]]:
        parser, pairing = self._pipeline.health()
        return {
            "capture": self._source.health.as_dict(),
            "parser": parser,
            "pairing": pairing,
            "writer": {"rows_rejected": self._writer.rows_rejected},
        }


class _Handoff:
    """The rows a pipeline hands over while its lock is held, for the writer to take once it is released."""

    def __init__(self) -> None:
        self._rows: list[Operation] = []
        self._tables: list[pa.Table] = []

    def write_many(self, ops: list[Operation]) -> None:
        self._rows.extend(ops)

    def write_columns(self, table: pa.Table) -> None:
        self._tables.append(table)

    def write_into(self, sink: RowSink) -> None:
        if self._rows:
            sink.write_many(self._rows)
        for table in self._tables:
            sink.write_columns(table)
