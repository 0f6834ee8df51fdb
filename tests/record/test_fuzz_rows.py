"""Fuzz: any request and reply bytes, in any chunking with holes, become rows the profile schema accepts.

Requests and replies of the three protocols are drawn with numbers at every column's limits, mixed with
arbitrary bytes, cut into arbitrary chunks and holes, and fed through the parsers, the pairing and the writer's
row conversion. Any exception, or a row the schema rejects, fails the test.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from membench.profile.schema import Operation
from membench.profile.writer import _table_from_rows
from membench.protocol.events import ParserEvent, Request, Response
from membench.protocol.stream import RequestStreamParser, ResponseStreamParser
from membench.record.anonymize import KeyHasher
from membench.record.pairing import ConnectionPairer, PairingStats
from tests.record.traffic_strategies import cuts, streams, timestamps

HASHER = KeyHasher.from_passphrase("fuzz")
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
