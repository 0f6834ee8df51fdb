"""Properties: no input makes a parser raise or lose count of a byte, and chunking never changes what is parsed."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from membench.protocol.events import Request, Response
from membench.protocol.stream import RequestStreamParser, ResponseStreamParser
from tests.protocol.helpers import packet, split_at, untimed

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

keys = st.binary(min_size=1, max_size=12).map(lambda b: b.hex().encode())
values = st.binary(max_size=300)
small = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def text_request(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["get", "gets", "gat", "set", "cas", "delete", "incr", "touch", "mg", "ms", "md",
                                 "ma", "mn", "stats", "version", "typo", "noreply_set"]))
    key = draw(keys)
    value = draw(values)
    if kind in ("get", "gets"):
        return kind.encode() + b" " + b" ".join(draw(st.lists(keys, min_size=1, max_size=4))) + b"\r\n"
    if kind == "gat":
        return b"gat %d " % draw(small) + key + b"\r\n"
    if kind in ("set", "noreply_set"):
        suffix = b" noreply" if kind == "noreply_set" else b""
        head = b"set " + key + b" %d %d %d" % (draw(small), draw(small), len(value)) + suffix
        return head + b"\r\n" + value + b"\r\n"
    if kind == "cas":
        return b"cas " + key + b" 0 0 %d %d\r\n" % (len(value), draw(small)) + value + b"\r\n"
    if kind == "ms":
        head = b"ms " + key + b" %d T%d F%d q O%d" % (len(value), draw(small), draw(small), draw(small))
        return head + b"\r\n" + value + b"\r\n"
    if kind in ("mg", "md", "ma"):
        return kind.encode() + b" " + key + b" v k O" + key + b"\n"
    if kind == "delete":
        return b"delete " + key + draw(st.sampled_from([b"", b" noreply"])) + b"\r\n"
    if kind == "incr":
        return b"incr " + key + b" %d\r\n" % draw(small)
    if kind == "touch":
        return b"touch " + key + b" %d\r\n" % draw(small)
    if kind == "typo":
        return b"gte " + key + b"\r\n"
    return kind.encode() + b"\r\n"


@st.composite
def text_response(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["value", "va", "simple", "number", "stat", "error", "meta", "other"]))
    value = draw(values)
    if kind == "value":
        return b"VALUE " + draw(keys) + b" %d %d\r\n" % (draw(small), len(value)) + value + b"\r\nEND\r\n"
    if kind == "va":
        return b"VA %d f%d k" % (len(value), draw(small)) + draw(keys) + b" O1\r\n" + value + b"\r\n"
    if kind == "simple":
        return draw(st.sampled_from([b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND", b"DELETED", b"TOUCHED",
                                     b"OK", b"END"])) + b"\r\n"
    if kind == "number":
        return b"%d\r\n" % draw(small)
    if kind == "stat":
        return b"STAT curr_items %d\r\n" % draw(small)
    if kind == "error":
        return b"CLIENT_ERROR bad data chunk\r\n"
    if kind == "meta":
        return draw(st.sampled_from([b"HD", b"EN", b"NF", b"NS", b"EX", b"MN"])) + b"\r\n"
    return b"ITEM k [1 b; 0 s]\r\n"


@st.composite
def binary_request(draw: st.DrawFn) -> bytes:
    opcode = draw(st.sampled_from([0x00, 0x09, 0x0C, 0x0D, 0x01, 0x11, 0x0E, 0x04, 0x05, 0x0A, 0x10, 0x1C, 0x1D]))
    key = draw(keys)
    opaque = draw(small)
    if opcode in (0x01, 0x11):
        return packet(0x80, opcode, key, struct.pack(">II", draw(small), draw(small)), draw(values), opaque=opaque)
    if opcode == 0x0E:
        return packet(0x80, opcode, key, value=draw(values), opaque=opaque)
    if opcode == 0x05:
        return packet(0x80, opcode, key, struct.pack(">QQI", 1, 0, draw(small)), opaque=opaque)
    if opcode in (0x1C, 0x1D):
        return packet(0x80, opcode, key, struct.pack(">I", draw(small)), opaque=opaque)
    if opcode in (0x0A, 0x10):
        return packet(0x80, opcode, opaque=opaque)
    return packet(0x80, opcode, key, opaque=opaque)


@st.composite
def binary_response(draw: st.DrawFn) -> bytes:
    opcode = draw(st.sampled_from([0x00, 0x0C, 0x01, 0x04, 0x05, 0x0A, 0x10, 0x0B]))
    status = draw(st.sampled_from([0, 0, 0, 1, 2, 5, 0x81]))
    if opcode in (0x00, 0x0C) and status == 0:
        key = draw(keys) if opcode == 0x0C else b""
        return packet(0x81, opcode, key, struct.pack(">I", draw(small)), draw(values), opaque=draw(small))
    if opcode == 0x10 and status == 0:
        return packet(0x81, opcode, draw(keys), value=draw(values))
    return packet(0x81, opcode, value=b"Not found" if status else b"", status=status, opaque=draw(small))


def streams() -> st.SearchStrategy[tuple[bytes, bool]]:
    return st.one_of(
        st.lists(text_request(), min_size=1, max_size=12).map(lambda units: (b"".join(units), False)),
        st.lists(text_response(), min_size=1, max_size=12).map(lambda units: (b"".join(units), True)),
        st.lists(binary_request(), min_size=1, max_size=12).map(lambda units: (b"".join(units), False)),
        st.lists(binary_response(), min_size=1, max_size=12).map(lambda units: (b"".join(units), True)),
    )


def new_parser(response: bool, mid_stream: bool = False) -> RequestStreamParser | ResponseStreamParser:
    return ResponseStreamParser(mid_stream) if response else RequestStreamParser(mid_stream)


@SETTINGS
@given(streams(), st.lists(st.integers(min_value=0, max_value=5000), max_size=30))
def test_any_chunking_of_valid_traffic_gives_the_same_events(stream: tuple[bytes, bool], cuts: list[int]) -> None:
    data, response = stream
    whole = new_parser(response)
    expected = whole.receive(data, 0) + whole.close(1)
    assert all(type(e) is Request or type(e) is Response for e in expected)
    chunked = new_parser(response)
    events = []
    for index, chunk in enumerate(split_at(data, cuts)):
        events += chunked.receive(chunk, index)
    events += chunked.close(len(cuts) + 1)
    assert untimed(events) == untimed(expected)
    assert chunked.stats == whole.stats
    assert whole.stats.bytes_parsed == len(data)


@SETTINGS
@given(st.lists(st.one_of(st.binary(max_size=200), st.integers(min_value=1, max_value=300),
                          streams().map(lambda s: s[0])), max_size=20),
       st.booleans(), st.booleans())
def test_arbitrary_bytes_and_holes_never_raise_and_every_byte_is_accounted(
        pieces: list[bytes | int], response: bool, mid_stream: bool) -> None:
    parser = new_parser(response, mid_stream)
    fed = missing = 0
    for index, piece in enumerate(pieces):
        if isinstance(piece, int):
            parser.receive_hole(piece, index)
            missing += piece
        else:
            parser.receive(piece, index)
            fed += len(piece)
    parser.close(len(pieces))
    stats = parser.stats
    assert stats.bytes_parsed + stats.bytes_skipped == fed
    assert stats.bytes_missing == missing
