"""Text protocol lines whose fate was checked against a real memcached 1.6: client flags past 32 bits, lines with
control bytes, and the NUL byte that ends memcached's reading of a command line.

Each exchange is sent raw to memcached, and what it answered is recorded through the pipeline that runs
(the compiled twin, or the specification under MEMBENCH_NO_EXTENSIONS=1): the rows must say what memcached did,
and their counters must move as memcached's own `stats` did.
"""

from __future__ import annotations

import socket

import pyarrow as pa
import pytest

from membench.profile.schema import SCHEMA, Operation
from membench.protocol import text_commands
from membench.protocol.events import Command, Request, Skipped
from membench.protocol.stream import RequestStreamParser
from membench.record.anonymize import KeyHasher
from membench.record.pipeline import new_pipeline
from tests.conftest import Memcached, profile_counters, stats_delta
from tests.record.memcached_exchange import read_until

HASHER = KeyHasher(b"fidelity-salt-16")
COUNTED = ("cmd_get", "get_hits", "get_misses", "cmd_set", "delete_hits", "delete_misses")


def record_rows(requests: bytes, replies: bytes, request_hole_at: int | None = None) -> list[Operation]:
    """The rows the running pipeline records from one connection's two byte streams; `request_hole_at` makes the
    request byte at that offset a one-byte hole (as if the capture had missed it)."""
    pipeline = new_pipeline(HASHER)
    pipeline.open(0, False)
    if request_hole_at is None:
        pipeline.chunk(0, 0, 0, requests, len(requests), 1_000)
    else:
        pipeline.chunk(0, 0, 0, requests[:request_hole_at], request_hole_at, 1_000)
        rest = request_hole_at + 1
        pipeline.chunk(0, 0, rest, requests[rest:], len(requests) - rest, 1_000)
    pipeline.chunk(0, 1, 0, replies, len(replies), 2_000)
    pipeline.close_all(3_000)
    return [Operation(*row) for row in pipeline.take_rows()]


def counters(rows: list[Operation]) -> dict[str, int]:
    """What the rows say memcached's counters moved by (a refused command counts nothing)."""
    kept = [row._asdict() for row in rows if row.status != "client_error"]
    counts = profile_counters(pa.Table.from_pylist(kept, schema=SCHEMA))
    return {name: counts[name] for name in COUNTED}


def exchange(memcached: Memcached, requests: bytes) -> tuple[bytes, list[Operation], dict[str, int]]:
    """memcached's replies to `requests` (which must end with `mn`), the rows recorded, and its counters' moves."""
    before = memcached.stats()
    with socket.create_connection((memcached.host, memcached.port)) as sock:
        sock.sendall(requests)
        replies = read_until(sock, b"MN\r\n")
    delta = stats_delta(before, memcached.stats())
    return replies, record_rows(requests, replies), {name: delta[name] for name in COUNTED}


def statuses(rows: list[Operation]) -> list[tuple[str, str]]:
    return [(row.command, row.status) for row in rows]


# D3: client flags are read with strtoul into 64 bits and kept as their low 32 bits.

def test_storage_flags_past_32_bits_are_stored_with_their_low_bits(memcached: Memcached) -> None:
    replies, rows, delta = exchange(memcached, (
        b"set flg 4294967296 0 1\r\nx\r\n"
        b"set big 99999999999 0 1\r\ny\r\n"
        b"add top 18446744073709551615 0 1\r\nz\r\n"
        b"replace top +4294967298 0 1\r\nw\r\n"
        b"set wrap -9223372036854775809 0 1\r\nv\r\n"
        b"get flg big top wrap\r\nmn\r\n"))
    assert replies == (b"STORED\r\nSTORED\r\nSTORED\r\nSTORED\r\nSTORED\r\n"
                       b"VALUE flg 0 1\r\nx\r\nVALUE big 1215752191 1\r\ny\r\nVALUE top 2 1\r\nw\r\n"
                       b"VALUE wrap 4294967295 1\r\nv\r\nEND\r\nMN\r\n")
    assert statuses(rows) == [("set", "stored"), ("set", "stored"), ("add", "stored"), ("replace", "stored"),
                              ("set", "stored"), ("get", "hit"), ("get", "hit"), ("get", "hit"), ("get", "hit"),
                              ("mn", "ok")]
    assert [row.flags for row in rows[:9]] == [0, 1215752191, 4294967295, 2, 4294967295, 0, 1215752191, 2,
                                               4294967295]
    assert counters(rows) == delta


def test_cas_flags_past_32_bits_are_accepted(memcached: Memcached) -> None:
    replies, rows, delta = exchange(memcached, b"cas nokey 4294967296 0 1 5\r\nx\r\nget nokey\r\nmn\r\n")
    assert replies == b"NOT_FOUND\r\nEND\r\nMN\r\n"
    assert statuses(rows) == [("cas", "not_found"), ("get", "miss"), ("mn", "ok")]
    assert counters(rows) == delta


def test_meta_set_flags_are_read_as_the_text_flags(memcached: Memcached) -> None:
    """`ms` F flags past 32 bits were counted out of range (stored as null): memcached keeps their low 32 bits, and
    refuses what it refuses for `set`, reading and dropping the data block."""
    replies, rows, delta = exchange(memcached, (
        b"ms mflg 1 F99999999999\r\nx\r\nms mtop 1 F18446744073709551615\r\ny\r\nms mplus 1 F+5\r\nz\r\n"
        b"ms mbad 1 F-1\r\nw\r\nms mbad 1 F18446744073709551616\r\nw\r\nms mbad 1 F\r\nw\r\n"
        b"mg mflg f v\r\nmg mtop f v\r\nmg mplus f v\r\nmg mbad f v\r\nmn\r\n"))
    refused = b"CLIENT_ERROR bad command line format\r\n"
    assert replies == (b"HD\r\n" * 3 + refused * 3 + b"VA 1 f1215752191\r\nx\r\nVA 1 f4294967295\r\ny\r\n"
                       b"VA 1 f5\r\nz\r\nEN\r\nMN\r\n")
    assert statuses(rows) == [("ms", "stored")] * 3 + [("ms", "client_error")] * 3 + [("mg", "hit")] * 3 + [
        ("mg", "miss"), ("mn", "ok")]
    assert [row.flags for row in rows[:3]] == [1215752191, 4294967295, 5]
    assert counters(rows) == delta


@pytest.mark.parametrize("flags", [b"18446744073709551616", b"-1", b"-9223372036854775808", b"abc", b"5x"])
def test_storage_flags_memcached_refuses_leave_the_data_line_a_command(memcached: Memcached, flags: bytes) -> None:
    replies, rows, delta = exchange(memcached, b"set bad " + flags + b" 0 1\r\nx\r\nget bad\r\nmn\r\n")
    assert replies == b"CLIENT_ERROR bad command line format\r\nERROR\r\nEND\r\nMN\r\n"
    assert statuses(rows) == [("other", "client_error"), ("other", "error"), ("get", "miss"), ("mn", "ok")]
    assert counters(rows) == delta


@pytest.mark.parametrize(("token", "expected"), [
    (b"0", 0), (b"-0", 0), (b"+5", 5), (b"4294967295", 4294967295), (b"4294967296", 0),
    (b"99999999999", 1215752191), (b"18446744073709551615", 4294967295), (b"9223372036854775808", 0),
    (b"-9223372036854775809", 4294967295), (b"-18446744073709551615", 1), (b"18446744073709551616", None),
    (b"-1", None), (b"-9223372036854775807", None), (b"-18446744073709551616", None), (b"0x10", None),
    (b"1e3", None), (b"", None), (b"-", None)])
def test_client_flags_read_as_memcached_reads_them(token: bytes, expected: int | None) -> None:
    # Each value was checked against memcached 1.6.18 with `set` and `ms F` (both share the rule).
    assert text_commands.client_flags(token) == expected


# D4: in sync, every line is a command memcached answers; only past a hole is garbage skipped.

GARBAGE_LINES = [
    b"\x00\x01\x02\xff",  # control bytes only
    b"\x0b\x0c",  # whitespace to Python, not to memcached's tokenizer: an empty command
    b"",  # an empty line
    b"foo\x00bar",  # ends at its NUL for memcached: an unknown command
    b"\x00get cnt",  # ends at its NUL for memcached: an empty command
    b"x" * 3000,  # longer than memcached's 2048 bytes, but whole in its first read
]


@pytest.mark.parametrize("line", GARBAGE_LINES, ids=["control", "vt-ff", "empty", "nul-inside", "nul-first", "long"])
def test_garbage_line_in_sync_takes_its_error_reply(memcached: Memcached, line: bytes) -> None:
    replies, rows, delta = exchange(memcached, line + b"\r\nget cnt\r\nmn\r\n")
    assert replies == b"ERROR\r\nEND\r\nMN\r\n"
    assert statuses(rows) == [("other", "error"), ("get", "miss"), ("mn", "ok")]
    assert counters(rows) == delta


def test_control_byte_inside_a_key_is_part_of_the_key(memcached: Memcached) -> None:
    replies, rows, delta = exchange(memcached, b"set a\x01 0 0 1\r\nx\r\nget a\x01b\r\nget a\x01\r\nmn\r\n")
    assert replies == b"STORED\r\nEND\r\nVALUE a\x01 0 1\r\nx\r\nEND\r\nMN\r\n"
    assert statuses(rows) == [("set", "stored"), ("get", "miss"), ("get", "hit"), ("mn", "ok")]
    assert counters(rows) == delta


def test_nul_ends_a_command_line_for_memcached(memcached: Memcached) -> None:
    # `set a` is missing arguments (ERROR, no data block), so `x` is a command of its own.
    replies, rows, delta = exchange(memcached, b"set a\x00b 0 0 1\r\nx\r\nget a\x00junk\r\nmn\r\n")
    assert replies == b"ERROR\r\nERROR\r\nEND\r\nMN\r\n"
    assert statuses(rows) == [("other", "error"), ("other", "error"), ("get", "miss"), ("mn", "ok")]
    assert counters(rows) == delta
    assert rows[2].key_length == 1  # the key memcached looked up: `a`


def test_garbage_right_after_a_hole_is_skipped_not_a_request() -> None:
    # The hole ate the end of `get a`'s line, so the parser cannot tell where a command starts: the garbage
    # that follows is no evidence of a request, and the first valid command puts it back in sync.
    requests = b"get a\r\n\x01\x02\xff\r\nget b\r\n"
    rows = record_rows(requests, b"END\r\nEND\r\n", request_hole_at=len(b"get a\r"))
    assert [row.command for row in rows] == ["get"]
    parser = RequestStreamParser()
    events = parser.receive(b"get a\r", 1) + parser.receive_hole(1, 2) + parser.receive(b"\x01\x02\xff\r\nget b\r\n", 3)
    assert [(type(event), getattr(event, "reason", None)) for event in events] == [
        (Skipped, "hole"), (Skipped, "resync"), (Request, None)]
    assert isinstance(events[2], Request) and events[2].command is Command.GET and events[2].keys == (b"b",)


def test_a_tab_is_part_of_a_key_as_memcached_splits_at_spaces_only(memcached: Memcached) -> None:
    """memcached's tokenizer cuts at spaces only: `get a<TAB>b` asks for one key, and `get<TAB>a` is no command.
    membench cut at any whitespace, so the get counted two misses where memcached counted a hit."""
    replies, rows, delta = exchange(memcached, (
        b"set a\tb 0 0 1\r\nx\r\nget a\tb\r\nget a\r\nget k2 a\tb\r\nmg a\tb v\r\nms t\vk 1\r\nz\r\nmg t\vk v\r\n"
        b"get\ta\r\nmn\r\n"))
    assert replies == (b"STORED\r\nVALUE a\tb 0 1\r\nx\r\nEND\r\nEND\r\nVALUE a\tb 0 1\r\nx\r\nEND\r\nVA 1\r\nx\r\n"
                       b"HD\r\nVA 1\r\nz\r\nERROR\r\nMN\r\n")
    assert statuses(rows) == [("set", "stored"), ("get", "hit"), ("get", "miss"), ("get", "miss"), ("get", "hit"),
                              ("mg", "hit"), ("ms", "stored"), ("mg", "hit"), ("other", "error"), ("mn", "ok")]
    assert rows[0].key_hash == rows[1].key_hash == rows[4].key_hash == rows[5].key_hash != rows[2].key_hash
    assert rows[0].key_length == 3
    assert counters(rows) == delta


@pytest.mark.parametrize(("hole", "in_values", "rows"), [((16, 20), 4, 2), ((2, 5), 0, 1)],
                         ids=["inside-the-data-block", "in-the-command-line"])
def test_a_hole_inside_a_value_is_told_apart_from_one_that_breaks_framing(hole: tuple[int, int], in_values: int,
                                                                          rows: int) -> None:
    """A hole inside a data block leaves the set whole (eBPF's copy limit cuts big values so); one in a command line
    loses the command. Health says which (`bytes_missing_in_values`), so only the second is called a loss."""
    requests = b"set k 0 0 10\r\n0123456789\r\nget k\r\n"
    replies = b"STORED\r\nVALUE k 0 10\r\n0123456789\r\nEND\r\n"
    pipeline = new_pipeline(HASHER)
    pipeline.open(0, False)
    start, end = hole
    pipeline.chunk(0, 0, 0, requests[:start], start, 1_000)
    pipeline.chunk(0, 0, end, requests[end:], len(requests) - end, 1_000)
    pipeline.chunk(0, 1, 0, replies, len(replies), 2_000)
    pipeline.close_all(3_000)
    assert len(pipeline.take_rows()) == rows
    parser = pipeline.health()[0]
    assert (parser["request_bytes_missing"], parser["request_bytes_missing_in_values"]) == (end - start, in_values)


@pytest.mark.parametrize("command", [b"gat 0", b"gats 0"])
def test_a_gat_line_too_long_for_one_read_is_no_operation(memcached: Memcached, command: bytes) -> None:
    # memcached reads past 2048 bytes without a newline only for get and gets; a longer gat line makes it close
    # the connection without executing it (checked against memcached 1.6.18), so its keys are no rows.
    keys = b" ".join(b"k%05d" % i for i in range(3000))  # about 21 KB, past memcached's 16 KiB read buffer
    requests = command + b" " + keys + b"\r\nmn\r\n"
    before = memcached.stats()
    replies = b""
    with socket.create_connection((memcached.host, memcached.port)) as sock:
        sock.sendall(requests)
        sock.settimeout(5)
        try:
            while chunk := sock.recv(65536):
                replies += chunk
        except ConnectionResetError:
            pass  # memcached closed with the rest of the line unread
    delta = stats_delta(before, memcached.stats())
    assert replies == b""
    rows = record_rows(requests, replies)
    assert not [row for row in rows if row.command in ("gat", "gats")]
    assert counters(rows) == {name: delta[name] for name in COUNTED}
