"""The compiled record pipeline against its Python specification: the same calls must give the same rows, row for
row, and the same health counters, for arbitrary traffic of the three protocols (numbers at every limit, garbage,
holes, re-delivered bytes, connections joined mid-stream, request and reply chunks interleaved in any order) and
for every capture of the corpus."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from membench.capture.ebpf import events, ring
from membench.capture.pcap import PcapFileSource
from membench.capture.stream import ConnectionClosed, ConnectionOpened, StreamChunk
from membench.extensions import DISABLED, compiled
from membench.record.anonymize import KeyHasher
from membench.record.pipeline import RecordPipeline
from tests.record.traffic_strategies import conversations, streams, timestamps

CORE = compiled("membench.record._core")
pytestmark = pytest.mark.skipif(CORE is None, reason="MEMBENCH_NO_EXTENSIONS=1: only the specification runs"
                                if DISABLED else "the compiled twins were not built")
SALT = b"0123456789abcdef"
CORPUS = Path(__file__).parents[1] / "data" / "pcap"

# One step of a schedule: (direction, kind, size): kind 0 delivers the next `size` bytes, 1 skips them as a
# hole in the offsets, 2 delivers a chunk whose tail of `size` bytes was not copied, 3 delivers again bytes
# already given (a retransmission overlapping the stream).
steps = st.lists(st.tuples(st.integers(0, 1), st.sampled_from([0, 0, 0, 1, 2, 3]), st.integers(1, 70)),
                 max_size=30)


def run(pipeline: Any, conversations: list[tuple[bytes, bytes, list[tuple[int, int, int]], bool]],
        timestamp: int) -> tuple[list[tuple[Any, ...]], Any]:
    for conn, (requests, replies, schedule, mid_stream) in enumerate(conversations):
        if not mid_stream:
            pipeline.open(conn, False)
        data = (requests, replies)
        position = [0, 0]
        ts = timestamp
        for direction, kind, size in [*schedule, (0, 0, 1 << 20), (1, 0, 1 << 20)]:
            ts += 1000
            at = position[direction]
            piece = data[direction][at:at + size]
            if not piece:
                continue
            if kind == 0:
                pipeline.chunk(conn, direction, at, piece, len(piece), ts)
            elif kind == 1:
                position[direction] += len(piece)
                continue
            elif kind == 2:
                pipeline.chunk(conn, direction, at, piece[:len(piece) // 2], len(piece), ts)
            else:
                back = max(0, at - size // 2)
                pipeline.chunk(conn, direction, back, data[direction][back:at + size], at + len(piece) - back, ts)
            position[direction] += len(piece)
    pipeline.close_all(timestamp + 10**9)
    return pipeline.take_rows(), pipeline.health()


garbage = st.tuples(streams, streams)
# Well-formed exchanges (with garbage spliced in now and then), or arbitrary units and bytes.
traffic = st.one_of(conversations, conversations, st.tuples(conversations, garbage, conversations).map(
    lambda parts: (b"".join(part[0] for part in parts), b"".join(part[1] for part in parts))), garbage)
connection = st.tuples(traffic, steps, st.booleans()).map(lambda c: (c[0][0], c[0][1], c[1], c[2]))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(connection, min_size=1, max_size=3), timestamps)
def test_twin_gives_the_specifications_rows(connections: list[Any], timestamp: int) -> None:
    expected = run(RecordPipeline(KeyHasher(SALT)), connections, timestamp)
    assert run(CORE.RecordPipeline(SALT), connections, timestamp) == expected


def replay_source(pipeline: Any, path: Path) -> tuple[list[tuple[Any, ...]], Any]:
    for item in PcapFileSource(path, (11211,)):
        if type(item) is StreamChunk:
            pipeline.chunk(*item)
        elif type(item) is ConnectionOpened:
            pipeline.open(item.conn, item.mid_stream)
        elif type(item) is ConnectionClosed:
            pipeline.close(item.conn, item.timestamp_ns)
    pipeline.close_all(0)
    return pipeline.take_rows(), pipeline.health()


@pytest.mark.parametrize("name", sorted(path.name for path in CORPUS.glob("*.pcap")))
def test_twin_gives_the_specifications_rows_on_the_corpus(name: str) -> None:
    expected = replay_source(RecordPipeline(KeyHasher(SALT)), CORPUS / name)
    assert expected[0], "the capture holds operations"
    assert replay_source(CORE.RecordPipeline(SALT), CORPUS / name) == expected


RING_SIZE = 1 << 14
DATA_START = 64


def ring_of(records: list[tuple[int, bytes]], start: int) -> tuple[bytes, int]:
    """A ring mapped twice in a row (as the kernel maps it) holding `records` (flags, event + payload) from
    position `start`; returns it and the producer position."""
    ring = bytearray(RING_SIZE)
    position = start
    for flags, record in records:
        header = struct.pack("<II", len(record) | flags, 0)
        for i, byte in enumerate(header + record):
            ring[(position + i) % RING_SIZE] = byte
        position += (len(record) + 8 + 7) & ~7
    return bytes(DATA_START) + bytes(ring) + bytes(ring), position


def event(kind: int, conn: int, direction: int = 0, offset: int = 0, payload: bytes = b"", moved: int = 0,
          flags: int = 0, timestamp: int = 5) -> bytes:
    fields = {"timestamp_ns": timestamp, "conn": conn, "offset": offset, "length": moved, "copied": len(payload),
              "type": kind, "direction": direction, "flags": flags, "reserved": 0}
    header = events.EVENT.pack(*(fields[name] for name, _ in events.EVENT_LAYOUT))
    if kind == events.EventType.OPEN:
        return header + events.OPEN_INFO.pack(b"\x7f\0\0\1" + bytes(12), b"\x7f\0\0\1" + bytes(12), 11211, 5000,
                                              2, 0)
    return header + payload


@st.composite
def ring_records(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    records = []
    offsets: dict[tuple[int, int], int] = {}
    for conn in range(draw(st.integers(1, 3))):
        requests, replies = draw(conversations)
        if draw(st.booleans()):
            records.append((0, event(events.EventType.OPEN, conn, flags=draw(st.sampled_from([0, 2])))))
        for direction, data in ((0, requests), (1, replies)):
            pos = 0
            while pos < len(data):
                size = draw(st.integers(1, 64))
                piece = data[pos:pos + size]
                copied = piece[:draw(st.integers(0, len(piece)))] if draw(st.booleans()) else piece
                at = offsets.get((conn, direction), 0)
                flags = ring.DISCARD if draw(st.integers(0, 9)) == 0 else 0
                records.append((flags, event(events.EventType.DATA, conn, direction, at, copied, len(piece),
                                             timestamp=len(records) * 1000)))
                offsets[conn, direction] = at + len(piece)
                pos += len(piece)
        if draw(st.booleans()):
            records.append((0, event(events.EventType.CLOSE, conn, timestamp=len(records) * 1000)))
    return draw(st.permutations(records)) if draw(st.booleans()) else records


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ring_records(), st.integers(0, RING_SIZE - 1), st.booleans(), st.integers(1, 50), st.booleans())
def test_twin_decodes_the_ring_as_the_specification(records: list[tuple[int, bytes]], start: int,
                                                    server_side: bool, limit: int, busy_last: bool) -> None:
    start &= ~7
    if busy_last and records:
        records[-1] = (ring.BUSY, records[-1][1])
    data, producer = ring_of(records, start)
    spec = RecordPipeline(KeyHasher(SALT))
    known: set[int] = set()
    consumer = start
    spec_drains = []
    while True:
        decoder = ring.decode_records(data, DATA_START, consumer, producer, RING_SIZE - 1, server_side, known, limit)
        while True:
            try:
                item = next(decoder)
            except StopIteration as stop:
                drained = stop.value
                break
            if type(item) is StreamChunk:
                spec.chunk(*item)
            elif type(item) is ConnectionOpened:
                spec.open(item.conn, item.mid_stream)
            else:
                spec.close(item.conn, item.timestamp_ns)
        spec_drains.append(dataclasses.astuple(drained))
        if drained.consumer == consumer:
            break
        consumer = drained.consumer
    twin = CORE.RecordPipeline(SALT)
    consumer = start
    twin_drains = []
    while True:
        drained = twin.drain_ring(data, DATA_START, consumer, producer, RING_SIZE - 1, server_side, limit)
        twin_drains.append(drained)
        if drained[0] == consumer:
            break
        consumer = drained[0]
    assert twin_drains == spec_drains
    for pipeline in (spec, twin):
        pipeline.close_all(10**12)
    assert (twin.take_rows(), twin.health()) == (spec.take_rows(), spec.health())


class TableSink:
    def __init__(self) -> None:
        self.tables: list[Any] = []

    def write_columns(self, table: Any) -> None:
        self.tables.append(table)


def test_twin_columns_grow_and_hold_zeros_under_nulls() -> None:
    """More rows than the columns first hold (they grow with the rows in them), and keyless, missed and stored rows
    whose nulls must not carry what the heap held before: Arrow writers of whole buffers would store it."""
    exchanges = 7000
    requests = b"version\r\nget k\r\nset s 5 0 1 noreply\r\nx\r\n" * exchanges
    replies = b"VERSION 1.6.21\r\nEND\r\n" * exchanges
    spec, twin = RecordPipeline(KeyHasher(SALT)), CORE.RecordPipeline(SALT)
    for pipeline in (spec, twin):
        pipeline.open(0, False)
        pipeline.chunk(0, 0, 0, requests, len(requests), 1000)
        pipeline.chunk(0, 1, 0, replies, len(replies), 2000)
        pipeline.close_all(3000)
    sink = TableSink()
    twin.flush_to(sink)
    (table,) = sink.tables
    assert table.num_rows == 3 * exchanges > 1 << 14
    assert table.to_pylist() == [dict(zip(table.column_names, row, strict=True)) for row in spec.take_rows()]
    for name in ("key_hash", "key_length", "value_length", "flags", "latency_us", "effect", "delta", "initial"):
        column = table.column(name).combine_chunks()
        values = column.indices if name == "effect" else column
        raw = values.buffers()[1].to_pybytes()[:len(values) * values.type.bit_width // 8]
        width = values.type.bit_width // 8
        nulls = [i for i, valid in enumerate(column.is_valid().to_pylist()) if not valid]
        assert nulls, name
        assert all(raw[i * width:(i + 1) * width] == bytes(width) for i in nulls), name
