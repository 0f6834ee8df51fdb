"""Fuzz: any request and reply bytes, in any chunking with holes, become rows the profile schema accepts.

Requests and replies of the three protocols are drawn with numbers at every column's limits, mixed with
arbitrary bytes, cut into arbitrary chunks and holes, and fed through the parsers, the pairing and the writer's
row conversion. Any exception, or a row the schema rejects, fails the test.
"""

from __future__ import annotations

import itertools
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from membench.profile.schema import Operation
from membench.profile.writer import _table_from_rows
from membench.protocol.events import ParserEvent, Request, Response
from membench.protocol.stream import RequestStreamParser, ResponseStreamParser
from membench.record.anonymize import KeyHasher
from membench.record.pairing import ConnectionPairer, PairingStats

HASHER = KeyHasher.from_passphrase("fuzz")
HEADER = struct.Struct(">BBHBBHIIQ")

limits = st.sampled_from([0, 1, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 3, 2**63 - 1, 2**63, 2**64,
                          -1, -(2**63) - 1, 99999999999999999999])
keys = st.sampled_from([b"k", b"a2V5", b"a2U=", b"!!!!", b"x" * 250, b"x" * 251])
words = st.sampled_from([b"get", b"gets", b"gat", b"set", b"cas", b"append", b"delete", b"incr", b"touch", b"mg",
                         b"ms", b"md", b"ma", b"mn", b"flush_all", b"VALUE", b"VA", b"HD", b"EN", b"NF", b"END",
                         b"STORED", b"CLIENT_ERROR", b"MN", b"12"])
flag_tokens = st.sampled_from([b"q", b"b", b"v", b"k", b"C", b"MR", b"N", b"T", b"F", b"O", b"f", b"t", b"s"])


@st.composite
def text_unit(draw: st.DrawFn) -> bytes:
    tokens = [draw(words)]
    for _ in range(draw(st.integers(0, 5))):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            tokens.append(b"%d" % draw(limits))
        elif choice == 1:
            tokens.append(draw(keys))
        else:
            tokens.append(draw(flag_tokens) + b"%d" % draw(limits))
    line = b" ".join(tokens) + b"\r\n"
    return line + draw(st.binary(max_size=20)) + draw(st.sampled_from([b"", b"\r\n"]))


@st.composite
def binary_unit(draw: st.DrawFn) -> bytes:
    magic = draw(st.sampled_from([0x80, 0x81]))
    opcode = draw(st.sampled_from([0x00, 0x01, 0x04, 0x05, 0x09, 0x0A, 0x0C, 0x0D, 0x11, 0x1C, 0x1D, 0x10]))
    key = draw(st.sampled_from([b"", b"k", b"x" * 250]))
    extras = draw(st.sampled_from([b"", struct.pack(">II", draw(limits) % 2**32, draw(limits) % 2**32),
                                   struct.pack(">QQI", 2**64 - 1, 2**64 - 1, 2**32 - 1), b"\xff\xff\xff\xff"]))
    value = draw(st.binary(max_size=20))
    status = draw(st.sampled_from([0, 1, 0x81]))
    body = len(extras) + len(key) + len(value)
    return (HEADER.pack(magic, opcode, len(key), len(extras), 0, status, body, draw(limits) % 2**32,
                        draw(limits) % 2**64) + extras + key + value)


streams = st.lists(st.one_of(text_unit(), binary_unit(), st.binary(max_size=40)), max_size=12).map(b"".join)
# Each piece: bytes given to the parser (True) or a hole of that many bytes (False).
cuts = st.lists(st.tuples(st.booleans(), st.integers(1, 60)), max_size=12)
timestamps = st.sampled_from([0, 1, 10**9, 2**32 * 1000 + 5, 2**62])


def feed(parser: RequestStreamParser | ResponseStreamParser, data: bytes, pieces: list[tuple[bool, int]],
         timestamp: int) -> list[ParserEvent]:
    events: list[ParserEvent] = []
    pos = 0
    for seen, size in pieces:
        if pos >= len(data):
            break
        size = min(size, len(data) - pos)
        events += parser.receive(data[pos:pos + size], timestamp) if seen else parser.receive_hole(size, timestamp)
        pos += size
    events += parser.receive(data[pos:], timestamp)
    return events + parser.close(timestamp)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, streams, cuts, cuts, timestamps, timestamps, st.booleans())
def test_any_traffic_becomes_rows_the_schema_accepts(requests: bytes, replies: bytes,
                                                      request_cuts: list[tuple[bool, int]],
                                                      reply_cuts: list[tuple[bool, int]], request_ts: int,
                                                      reply_ts: int, mid_stream: bool) -> None:
    rows: list[Operation] = []
    pairer = ConnectionPairer(0, HASHER, rows.append, PairingStats(), itertools.count(1).__next__)
    for event in feed(RequestStreamParser(mid_stream), requests, request_cuts, request_ts):
        if type(event) is Request:
            pairer.on_request(event)
    for event in feed(ResponseStreamParser(mid_stream), replies, reply_cuts, reply_ts):
        if type(event) is Response:
            pairer.on_response(event)
        else:
            pairer.on_reply_hole()
    pairer.close()
    assert _table_from_rows(rows).num_rows == len(rows)
