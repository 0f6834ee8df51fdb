"""Holes (bytes that existed but were not captured) and streams joined mid-way: sync kept or found again."""

from __future__ import annotations

import struct

from membench.protocol.events import Command, Protocol, Reply, Skipped
from membench.protocol.stream import RequestStreamParser, ResponseStreamParser
from tests.protocol.helpers import packet, requests, responses, skipped

MIB = 1 << 20
STORE = struct.Struct(">II")


def test_hole_inside_text_value_keeps_one_operation_with_its_real_length() -> None:
    parser = RequestStreamParser()
    events = parser.receive(b"get a\r\nset big 5 0 1048576\r\n" + b"v" * 1000, 1)
    events += parser.receive_hole(MIB - 2000, 2)  # most of the value was never captured
    events += parser.receive(b"v" * 1000 + b"\r\nget big\r\n", 3)
    events += parser.close(4)
    assert [(e.command, e.keys, e.value_length, e.flags, e.start_ns, e.end_ns) for e in requests(events)] == [
        (Command.GET, (b"a",), None, None, 1, 1),
        (Command.SET, (b"big",), MIB, 5, 1, 3),
        (Command.GET, (b"big",), None, None, 3, 3),
    ]
    assert skipped(events) == []
    stats = parser.stats
    assert (stats.bytes_missing, stats.bytes_skipped, stats.resyncs) == (MIB - 2000, 0, 0)


def test_hole_covering_the_end_of_a_value_completes_it_at_the_hole() -> None:
    parser = ResponseStreamParser()
    events = parser.receive(b"VALUE k 0 100\r\n" + b"x" * 10, 1)
    events += parser.receive_hole(92, 2)  # the rest of the data block and its \r\n
    events += parser.receive(b"END\r\n", 3)
    assert [(e.reply, e.value_length, e.start_ns, e.end_ns) for e in events] == [
        (Reply.VALUE, 100, 1, 2), (Reply.END, None, 3, 3)]


def test_hole_inside_binary_value_keeps_the_packet() -> None:
    parser = RequestStreamParser()
    stream = packet(0x80, 0x01, b"big", STORE.pack(9, 0), b"v" * MIB, opaque=4) + packet(0x80, 0x0A, opaque=5)
    head = 24 + 8 + 3
    events = parser.receive(stream[:head + 100], 1)
    events += parser.receive_hole(MIB - 200, 2)
    events += parser.receive(stream[head + MIB - 100:], 3)
    assert [(e.command, e.keys, e.value_length, e.flags, e.opaque, e.start_ns, e.end_ns) for e in events] == [
        (Command.SET, (b"big",), MIB, 9, 4, 1, 3), (Command.NOOP, (), None, None, 5, 3, 3)]
    assert parser.stats.bytes_parsed == len(stream) - (MIB - 200)


def test_hole_in_a_command_line_drops_it_and_resyncs_on_the_next_valid_command() -> None:
    parser = RequestStreamParser()
    events = parser.receive(b"get a\r\nget lo", 1)
    events += parser.receive_hole(50, 2)
    # What follows the hole is the tail of some line, then a data block that looks like commands.
    events += parser.receive(b"ng_key\r\nnonsense 1 2\r\nset k 0 0 7\r\nget x\r\n\r\ndelete k\r\n", 3)
    assert [(type(e).__name__, getattr(e, "command", None), getattr(e, "length", None)) for e in events] == [
        ("Request", Command.GET, None),
        ("Skipped", None, 6 + 50),  # the partial line and the hole
        ("Skipped", None, 8 + 14),  # the tail line and a line that is no valid command
        ("Request", Command.SET, None),
        ("Request", Command.DELETE, None),
    ]
    assert [e.reason for e in skipped(events)] == ["hole", "resync"]
    stats = parser.stats
    assert (stats.resyncs, stats.bytes_missing, stats.bytes_skipped, stats.errors) == (1, 50, 6 + 22, 0)


def test_reply_resync_does_not_trust_numbers_or_unknown_lines() -> None:
    parser = ResponseStreamParser()
    events = parser.receive(b"STORED\r\nVALUE k 0 30\r\n", 1)
    events += parser.receive_hole(5, 2)  # inside the data block: kept in sync
    events += parser.receive(b"x" * 25 + b"\r\nEND\r\n", 3)
    events += parser.receive(b"VALUE j 0 300\r\nabc", 4)
    events += parser.receive_hole(400, 5)  # past the end of the data block: sync lost
    events += parser.receive(b"\r\n12\r\nSOMETHING else\r\nDELETED\r\n", 6)
    assert [(getattr(e, "reply", None), getattr(e, "length", None), getattr(e, "reason", None)) for e in events] == [
        (Reply.STORED, None, None), (Reply.VALUE, None, None), (Reply.END, None, None), (Reply.VALUE, None, None),
        (None, 400 - 299, "hole"), (None, 2 + 4 + 16, "resync"), (Reply.DELETED, None, None)]


def test_hole_in_binary_header_resyncs_on_next_plausible_header() -> None:
    parser = ResponseStreamParser()
    first = packet(0x81, 0x0C, b"k", struct.pack(">I", 0), b"value")
    second = packet(0x81, 0x0A, opaque=3)
    events = parser.receive(first[:10], 1)
    events += parser.receive_hole(len(first) - 10 + 5, 2)  # the rest of the first, and 5 bytes of garbage
    events += parser.receive(b"\x81\x99junk" + second, 3)
    assert [(getattr(e, "reply", None), getattr(e, "length", None), getattr(e, "reason", None)) for e in events] == [
        (None, len(first) + 5, "hole"), (None, 6, "resync"), (Reply.NOOP, None, None)]
    assert parser.protocol is Protocol.BINARY


def test_text_stream_joined_mid_line_is_detected_and_synced() -> None:
    parser = RequestStreamParser(mid_stream=True)
    events = parser.receive(b"y_key 0 0 3\r\nabc\r\n", 1)
    assert parser.protocol is None
    events += parser.receive(b"get a\r\n", 2)
    assert parser.protocol is Protocol.TEXT
    assert [(type(e).__name__, getattr(e, "length", None), getattr(e, "start_ns", None)) for e in events] == [
        ("Skipped", 18, None), ("Request", None, 2)]
    assert parser.stats.bytes_skipped == 18


def test_binary_stream_joined_mid_packet_is_detected_and_synced() -> None:
    parser = ResponseStreamParser(mid_stream=True)
    value = b"\x00" * 10 + b"\r\nEND\r\n"  # a valid text line before the first whole binary packet
    stream = packet(0x81, 0x00, extras=struct.pack(">I", 1), value=value) + packet(0x81, 0x01, opaque=8)
    events = parser.receive(stream[5:], 1)
    assert parser.protocol is Protocol.BINARY
    assert [(getattr(e, "reply", None), getattr(e, "length", None)) for e in events] == [
        (None, len(stream) - 5 - 24), (Reply.STORED, None)]


def test_hole_before_any_data_then_detection() -> None:
    parser = RequestStreamParser()
    events = parser.receive_hole(100, 1)
    events += parser.receive(b"ta block\r\nget a b\r\n", 2)
    assert events == [Skipped(100, "hole", 1), Skipped(10, "resync", 2), *requests(events)]
    assert [r.keys for r in requests(events)] == [(b"a", b"b")]


def test_undecided_stream_holds_bounded_data_and_reports_it_at_close() -> None:
    parser = ResponseStreamParser(mid_stream=True)
    junk = b"\x00\x01" * 50_000
    events = parser.receive(junk, 1) + parser.receive(junk, 2)
    events += parser.close(3)
    assert parser.protocol is None
    assert responses(events) == []
    assert sum(e.length for e in skipped(events)) == 2 * len(junk)
    assert parser.stats.bytes_skipped == 2 * len(junk)


def test_hole_over_a_value_tail_and_its_end_keeps_the_end() -> None:
    # A client-side capture copies only the start of each read: the read holding the value's tail and END is
    # mostly a hole. END is the only unit that can end within 15 bytes after a text data block.
    parser = ResponseStreamParser()
    events = parser.receive(b"VALUE big 0 1048576\r\n" + b"v" * 1000, 1)
    events += parser.receive_hole(MIB - 1000 + 2 + 5, 2)  # rest of the data, its \r\n, and END\r\n
    events += parser.receive(b"END\r\n", 3)  # the next get, a miss
    assert [(e.reply, e.value_length, e.end_ns) for e in responses(events)] == [
        (Reply.VALUE, MIB, 2), (Reply.END, None, 2), (Reply.END, None, 3)]
    assert skipped(events) == [] and parser.stats.resyncs == 0


def test_hole_past_the_end_keeps_the_end_and_loses_only_what_follows() -> None:
    parser = ResponseStreamParser()
    events = parser.receive(b"VALUE big 0 100\r\n" + b"v" * 10, 1)
    events += parser.receive_hole(90 + 2 + 5 + 5, 2)  # ...END\r\n and the next reply, 5 bytes, unseen
    assert [e.reply for e in responses(events)] == [Reply.VALUE, Reply.END]
    assert [(s.length, s.reason) for s in skipped(events)] == [(5, "hole")]


def test_hole_that_may_hold_another_value_keeps_no_end() -> None:
    parser = ResponseStreamParser()
    events = parser.receive(b"VALUE big 0 100\r\n" + b"v" * 10, 1)
    events += parser.receive_hole(90 + 2 + 15, 2)  # could be END and more, or VALUE k 0 0 and its data
    assert [e.reply for e in responses(events)] == [Reply.VALUE]
    assert [(s.length, s.reason) for s in skipped(events)] == [(15, "hole")]
