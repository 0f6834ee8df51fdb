"""Binary packets in both directions: opcode and status mapping, extras, quiet opcodes, framing across chunks."""

from __future__ import annotations

import struct

import pytest

from membench.protocol.events import Command, Protocol, Reply, Request, Response, Skipped
from membench.protocol.stream import RequestStreamParser
from tests.protocol.helpers import packet, parse, parse_chunks

B = Protocol.BINARY
STORE = struct.Struct(">II")
ARITH = struct.Struct(">QQI")
U32 = struct.Struct(">I")


def q(opcode: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"", opaque: int = 0) -> bytes:
    return packet(0x80, opcode, key, extras, value, opaque=opaque)


def r(opcode: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"", status: int = 0,
      opaque: int = 0) -> bytes:
    return packet(0x81, opcode, key, extras, value, status=status, opaque=opaque)


def req(command: Command, keys: tuple[bytes, ...] = (), value_length: int | None = None, flags: int | None = None,
        ttl: int | None = None, quiet: bool = False, opaque: int = 0, start: int = 7, end: int = 7,
        delta: int | None = None, initial: int | None = None, opcode: int | None = None) -> Request:
    return Request(B, command, keys, value_length, flags, ttl, False, quiet, opaque, b"", start, end, None, delta,
                   initial, opcode)


def rep(reply: Reply, opcode: int, status: int = 0, key: bytes | None = None, value_length: int | None = None,
        flags: int | None = None, opaque: int = 0, cas: int | None = None) -> Response:
    return Response(B, reply, key, value_length, flags, opaque, opcode, status, 7, 7, cas)


@pytest.mark.parametrize(("data", "expected"), [
    (q(0x00, b"k", opaque=5), req(Command.GET, (b"k",), opaque=5)),
    (q(0x09, b"k"), req(Command.GET, (b"k",), quiet=True)),
    (q(0x0C, b"k"), req(Command.GET, (b"k",))),
    (q(0x0D, b"k", opaque=0xFFFFFFFF), req(Command.GET, (b"k",), quiet=True, opaque=0xFFFFFFFF)),
    (q(0x01, b"k", STORE.pack(0xDEADBEEF, 300), b"hello"), req(Command.SET, (b"k",), 5, 0xDEADBEEF, 300)),
    (q(0x11, b"k", STORE.pack(1, 2), b"hello"), req(Command.SET, (b"k",), 5, 1, 2, quiet=True)),
    (q(0x02, b"k", STORE.pack(1, 2), b""), req(Command.ADD, (b"k",), 0, 1, 2)),
    (q(0x12, b"k", STORE.pack(1, 2), b"x"), req(Command.ADD, (b"k",), 1, 1, 2, quiet=True)),
    (q(0x03, b"k", STORE.pack(1, 2), b"xy"), req(Command.REPLACE, (b"k",), 2, 1, 2)),
    (q(0x13, b"k", STORE.pack(1, 2), b"xy"), req(Command.REPLACE, (b"k",), 2, 1, 2, quiet=True)),
    (q(0x0E, b"k", value=b"abc"), req(Command.APPEND, (b"k",), 3)),
    (q(0x19, b"k", value=b"abc"), req(Command.APPEND, (b"k",), 3, quiet=True)),
    (q(0x0F, b"k", value=b"abc"), req(Command.PREPEND, (b"k",), 3)),
    (q(0x1A, b"k", value=b"abc"), req(Command.PREPEND, (b"k",), 3, quiet=True)),
    (q(0x04, b"k"), req(Command.DELETE, (b"k",))),
    (q(0x14, b"k"), req(Command.DELETE, (b"k",), quiet=True)),
    (q(0x05, b"n", ARITH.pack(2, 10, 60)), req(Command.INCR, (b"n",), ttl=60, delta=2, initial=10)),
    (q(0x15, b"n", ARITH.pack(2, 10, 60)), req(Command.INCR, (b"n",), ttl=60, quiet=True, delta=2, initial=10)),
    (q(0x06, b"n", ARITH.pack(2, 10, 0xFFFFFFFF)), req(Command.DECR, (b"n",), ttl=0xFFFFFFFF, delta=2)),
    (q(0x16, b"n", ARITH.pack(2, 10, 0)), req(Command.DECR, (b"n",), ttl=0, quiet=True, delta=2, initial=10)),
    (q(0x07), req(Command.QUIT)),
    (q(0x17), req(Command.QUIT, quiet=True)),
    (q(0x08), req(Command.FLUSH_ALL)),
    (q(0x08, extras=U32.pack(10)), req(Command.FLUSH_ALL)),
    (q(0x18), req(Command.FLUSH_ALL, quiet=True)),
    (q(0x0A), req(Command.NOOP)),
    (q(0x0B), req(Command.VERSION)),
    (q(0x10), req(Command.STATS)),
    (q(0x10, b"settings"), req(Command.STATS)),  # a stats group, not a cache key
    (q(0x1B, extras=U32.pack(1)), req(Command.VERBOSITY)),
    (q(0x1C, b"k", U32.pack(99)), req(Command.TOUCH, (b"k",), ttl=99)),
    (q(0x1D, b"k", U32.pack(5)), req(Command.GAT, (b"k",), ttl=5)),
    (q(0x1E, b"k", U32.pack(5)), req(Command.GAT, (b"k",), ttl=5, quiet=True)),
    (q(0x23, b"k", U32.pack(5)), req(Command.GAT, (b"k",), ttl=5)),
    (q(0x24, b"k", U32.pack(5)), req(Command.GAT, (b"k",), ttl=5, quiet=True)),
    (q(0x20), req(Command.OTHER)),
    (q(0x21, b"PLAIN", value=b"\x00user\x00pass"), req(Command.OTHER)),
    (q(0x22, b"PLAIN", value=b"more"), req(Command.OTHER)),
    (q(0x3D, b"unknown-opcode"), req(Command.OTHER)),
])
def test_request_packets(data: bytes, expected: Request) -> None:
    events = parse(data)
    assert events == [expected._replace(binary_opcode=data[1])]  # the opcode a reply must repeat


@pytest.mark.parametrize(("data", "expected"), [
    (r(0x00, extras=U32.pack(7), value=b"hello", opaque=3), rep(Reply.VALUE, 0x00, 0, None, 5, 7, 3)),
    (r(0x0C, b"k", U32.pack(7), b"hello"), rep(Reply.VALUE, 0x0C, 0, b"k", 5, 7)),
    (r(0x0D, b"k", U32.pack(0), b""), rep(Reply.VALUE, 0x0D, 0, b"k", 0, 0)),
    (r(0x00, value=b"Not found", status=1), rep(Reply.MISS, 0x00, 1)),
    (r(0x0C, b"k", value=b"Not found", status=1), rep(Reply.MISS, 0x0C, 1, b"k")),
    (r(0x1D, extras=U32.pack(1), value=b"v"), rep(Reply.VALUE, 0x1D, 0, None, 1, 1)),
    (r(0x1D, value=b"Not found", status=1), rep(Reply.MISS, 0x1D, 1)),
    (r(0x01), rep(Reply.STORED, 0x01)),
    (r(0x0E), rep(Reply.STORED, 0x0E)),
    (r(0x01, value=b"Data exists for key.", status=2), rep(Reply.EXISTS, 0x01, 2)),
    (r(0x03, value=b"Not found", status=1), rep(Reply.NOT_FOUND, 0x03, 1)),
    (r(0x02, value=b"Not stored.", status=5), rep(Reply.NOT_STORED, 0x02, 5)),
    (r(0x01, value=b"Too large.", status=3), rep(Reply.SERVER_ERROR, 0x01, 3)),
    (r(0x04), rep(Reply.DELETED, 0x04)),
    (r(0x04, value=b"Not found", status=1), rep(Reply.NOT_FOUND, 0x04, 1)),
    (r(0x05, value=struct.pack(">Q", 12)), rep(Reply.NUMBER, 0x05)),
    (r(0x06, value=b"Non-numeric server-side value for incr or decr", status=6), rep(Reply.CLIENT_ERROR, 0x06, 6)),
    (r(0x1C), rep(Reply.TOUCHED, 0x1C)),
    (r(0x1C, value=b"Not found", status=1), rep(Reply.NOT_FOUND, 0x1C, 1)),
    (r(0x10, b"pid", value=b"123"), rep(Reply.STAT, 0x10)),
    (r(0x10), rep(Reply.END, 0x10)),
    (r(0x0A), rep(Reply.NOOP, 0x0A)),
    (r(0x0B, value=b"1.6.18"), rep(Reply.VERSION, 0x0B)),
    (r(0x08), rep(Reply.OK, 0x08)),
    (r(0x07), rep(Reply.OK, 0x07)),
    (r(0x1B), rep(Reply.OK, 0x1B)),
    (r(0x20, value=b"PLAIN"), rep(Reply.OTHER, 0x20)),
    (r(0x21, value=b"Auth failure", status=0x20), rep(Reply.CLIENT_ERROR, 0x21, 0x20)),
    (r(0x3D, value=b"Unknown command", status=0x81), rep(Reply.ERROR, 0x3D, 0x81)),
    (r(0x01, value=b"Out of memory", status=0x82), rep(Reply.SERVER_ERROR, 0x01, 0x82)),
    (r(0x01, value=b"?", status=0x4242), rep(Reply.SERVER_ERROR, 0x01, 0x4242)),
])
def test_response_packets(data: bytes, expected: Response) -> None:
    assert parse(data, response=True) == [expected]


def test_pipelined_getkq_then_noop_and_a_large_value_split_over_chunks() -> None:
    value = bytes(range(256)) * 4096  # 1 MiB whose bytes include 0x80 everywhere
    stream = (b"".join(q(0x0D, b"k%d" % i, opaque=i) for i in range(5)) + q(0x0A, opaque=9)
              + q(0x01, b"big", STORE.pack(0, 0), value, opaque=10) + q(0x07))
    chunks = [stream[i:i + 1448] for i in range(0, len(stream), 1448)]
    events, parser = parse_chunks(chunks)
    last = len(chunks) - 1
    assert events == [*(req(Command.GET, (b"k%d" % i,), quiet=True, opaque=i, start=0, end=0, opcode=0x0D)
                        for i in range(5)),
                      req(Command.NOOP, opaque=9, start=0, end=0, opcode=0x0A),
                      req(Command.SET, (b"big",), len(value), 0, 0, opaque=10, start=0, end=last, opcode=0x01),
                      req(Command.QUIT, start=last, end=last, opcode=0x07)]
    assert parser.stats.bytes_parsed == len(stream)
    assert parser.stats.bytes_skipped == 0


def test_header_split_byte_by_byte() -> None:
    stream = q(0x01, b"key", STORE.pack(3, 4), b"value", opaque=77) + q(0x0C, b"key")
    events, _ = parse_chunks([stream[i:i + 1] for i in range(len(stream))])
    assert events == [req(Command.SET, (b"key",), 5, 3, 4, opaque=77, start=0, end=39, opcode=0x01),
                      req(Command.GET, (b"key",), start=40, end=len(stream) - 1, opcode=0x0C)]


def test_bad_magic_in_sync_is_an_error_and_parser_finds_the_next_plausible_header() -> None:
    garbage = b"GARBAGE\x80\xff" + b"\x00" * 40  # no magic where a header is due; then an implausible header
    stream = q(0x00, b"a") + garbage + q(0x00, b"b")
    parser = RequestStreamParser()
    events = parser.receive(stream, 1) + parser.close(2)
    assert events == [req(Command.GET, (b"a",), start=1, end=1, opcode=0x00), Skipped(len(garbage), "bad_header", 1),
                      req(Command.GET, (b"b",), start=1, end=1, opcode=0x00)]
    assert (parser.stats.errors, parser.stats.resyncs, parser.stats.bytes_skipped) == (1, 1, len(garbage))


def test_text_bytes_after_binary_start_are_garbage_not_text() -> None:
    # memcached fixes a connection's protocol on its first byte; so do we.
    parser = RequestStreamParser()
    text = b"get key_that_is_long_enough\r\n"
    events = parser.receive(q(0x0A) + text, 1) + parser.close(2)
    assert parser.protocol is Protocol.BINARY
    assert events == [req(Command.NOOP, start=1, end=1, opcode=0x0A), Skipped(len(text), "bad_header", 2)]
