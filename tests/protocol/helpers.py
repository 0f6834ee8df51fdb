"""Shared test helpers: feed byte streams to the parsers, build binary packets, relay real clients."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Sequence

from membench.protocol.events import ParserEvent, Request, Response, Skipped
from membench.protocol.stream import RequestStreamParser, ResponseStreamParser

HEADER = struct.Struct(">BBHBBHIIQ")


def parse(data: bytes, response: bool = False, ts: int = 7) -> list[ParserEvent]:
    """All events of one stream given in one chunk, closed at ts + 1."""
    parser = ResponseStreamParser() if response else RequestStreamParser()
    return parser.receive(data, ts) + parser.close(ts + 1)


def parse_chunks(chunks: Iterable[bytes], response: bool = False) -> tuple[list[ParserEvent], object]:
    """Events of a stream given chunk by chunk; chunk i carries timestamp i. Returns (events, parser)."""
    parser = ResponseStreamParser() if response else RequestStreamParser()
    events: list[ParserEvent] = []
    last = 0
    for last, chunk in enumerate(chunks):
        events += parser.receive(chunk, last)
    events += parser.close(last + 1)
    return events, parser


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = [0, *sorted(set(min(max(c, 0), len(data)) for c in cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def untimed(events: Iterable[ParserEvent]) -> list[tuple]:
    """Events without their timestamps, to compare parses of differently chunked streams."""
    out: list[tuple] = []
    for event in events:
        if type(event) is Request or type(event) is Response:
            out.append(tuple(event._replace(start_ns=0, end_ns=0)))
        else:
            out.append(("skipped", event.length, event.reason))
    return out


def requests(events: Iterable[ParserEvent]) -> list[Request]:
    return [e for e in events if type(e) is Request]


def responses(events: Iterable[ParserEvent]) -> list[Response]:
    return [e for e in events if type(e) is Response]


def skipped(events: Iterable[ParserEvent]) -> list[Skipped]:
    return [e for e in events if type(e) is Skipped]


def packet(magic: int, opcode: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"", status: int = 0,
           opaque: int = 0, cas: int = 0) -> bytes:
    body = extras + key + value
    return HEADER.pack(magic, opcode, len(key), len(extras), 0, status, len(body), opaque, cas) + body
