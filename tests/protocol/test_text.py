"""Text and meta parsing, command by command and reply by reply, with every event field checked."""

from __future__ import annotations

import pytest

from membench.protocol.events import Command, Protocol, Reply, Request, Response, Skipped
from membench.protocol.stream import RequestStreamParser
from tests.protocol.helpers import parse, parse_chunks, requests

T = Protocol.TEXT
M = Protocol.META


def req(command: Command, keys: tuple[bytes, ...] = (), value_length: int | None = None, flags: int | None = None,
        ttl: int | None = None, noreply: bool = False, quiet: bool = False, opaque: bytes | None = None,
        protocol: Protocol = T, start: int = 7, end: int = 7, letters: bytes = b"", effect: Command | None = None,
        delta: int | None = None, initial: int | None = None) -> Request:
    return Request(protocol, command, keys, value_length, flags, ttl, noreply, quiet, opaque, letters, start, end,
                   effect, delta, initial)


def rep(reply: Reply, key: bytes | None = None, value_length: int | None = None, flags: int | None = None,
        opaque: bytes | None = None, protocol: Protocol = T, start: int = 7, end: int = 7,
        cas: int | None = None) -> Response:
    return Response(protocol, reply, key, value_length, flags, opaque, None, None, start, end, cas)


@pytest.mark.parametrize(("line", "expected"), [
    (b"get k\r\n", req(Command.GET, (b"k",))),
    (b"get a b  c\r\n", req(Command.GET, (b"a", b"b", b"c"))),
    (b"gets a b\r\n", req(Command.GETS, (b"a", b"b"))),
    (b"gat 30 a b\r\n", req(Command.GAT, (b"a", b"b"), ttl=30)),
    (b"gats -1 a\r\n", req(Command.GATS, (b"a",), ttl=-1)),
    (b"delete k\r\n", req(Command.DELETE, (b"k",))),
    (b"delete k noreply\r\n", req(Command.DELETE, (b"k",), noreply=True)),
    (b"delete k 0\r\n", req(Command.DELETE, (b"k",))),
    (b"delete k 0 noreply\r\n", req(Command.DELETE, (b"k",), noreply=True)),
    (b"incr n 5\r\n", req(Command.INCR, (b"n",), delta=5)),
    (b"decr n 18446744073709551615 noreply\r\n", req(Command.DECR, (b"n",), noreply=True, delta=2**64 - 1)),
    (b"touch k 100\r\n", req(Command.TOUCH, (b"k",), ttl=100)),
    (b"touch k 0 noreply\r\n", req(Command.TOUCH, (b"k",), ttl=0, noreply=True)),
    (b"flush_all\r\n", req(Command.FLUSH_ALL)),
    (b"flush_all 10 noreply\r\n", req(Command.FLUSH_ALL, noreply=True)),
    (b"flush_all noreply\r\n", req(Command.FLUSH_ALL, noreply=True)),
    (b"version\r\n", req(Command.VERSION)),
    (b"stats\r\n", req(Command.STATS)),
    (b"stats slabs\r\n", req(Command.STATS)),
    (b"stats detail dump\r\n", req(Command.STATS)),
    (b"verbosity 1\r\n", req(Command.VERBOSITY)),
    (b"verbosity 1 noreply\r\n", req(Command.VERBOSITY, noreply=True)),
    (b"quit\r\n", req(Command.QUIT)),
    (b"get k\n", req(Command.GET, (b"k",))),  # bare \n, as memcached accepts
    (b"mn\r\n", req(Command.META_NOOP, protocol=M)),
    (b"mg k v t f Oab12 q k\r\n", req(Command.META_GET, (b"k",), quiet=True, opaque=b"ab12", protocol=M,
                                                letters=b"vtfOqk", effect=Command.GET)),
    (b"mg k T30 N30\r\n", req(Command.META_GET, (b"k",), ttl=30, protocol=M, letters=b"TN", effect=Command.GAT)),
    # a base64 key is the key it decodes to
    (b"mg Zm9v b v\r\n", req(Command.META_GET, (b"foo",), protocol=M, letters=b"bv", effect=Command.GET)),
    (b"md k q I T5\r\n", req(Command.META_DELETE, (b"k",), ttl=5, quiet=True, protocol=M, letters=b"qIT",
                               effect=Command.DELETE)),
    (b"ma k D10 MD N0 J3 v O9\r\n", req(Command.META_ARITHMETIC, (b"k",), opaque=b"9", protocol=M,
                                                  letters=b"DMNJvO", effect=Command.DECR, delta=10, initial=3)),
    (b"ma k\r\n", req(Command.META_ARITHMETIC, (b"k",), protocol=M, effect=Command.INCR, delta=1)),
    (b"me k\r\n", req(Command.META_DEBUG, (b"k",), protocol=M)),
])
def test_keyless_and_key_only_commands(line: bytes, expected: Request) -> None:
    assert parse(line) == [expected]


@pytest.mark.parametrize(("head", "expected"), [
    (b"set k 4294967295 0 5", req(Command.SET, (b"k",), 5, 4294967295, 0)),
    (b"add k 1 -1 5 noreply", req(Command.ADD, (b"k",), 5, 1, -1, noreply=True)),
    (b"replace k 0 100 5", req(Command.REPLACE, (b"k",), 5, 0, 100)),
    (b"append k 0 0 5", req(Command.APPEND, (b"k",), 5, 0, 0)),
    (b"prepend k 0 0 5 noreply", req(Command.PREPEND, (b"k",), 5, 0, 0, noreply=True)),
    (b"cas k 2 3 5 12345678901234", req(Command.CAS, (b"k",), 5, 2, 3)),
    (b"cas k 2 3 5 1 noreply", req(Command.CAS, (b"k",), 5, 2, 3, noreply=True)),
    (b"set k 0 0 5 junk", req(Command.SET, (b"k",), 5, 0, 0)),  # memcached ignores a last token not "noreply"
    (b"ms k 5 F7 T60 Oxy q", req(Command.META_SET, (b"k",), 5, 7, 60, quiet=True, opaque=b"xy", protocol=M,
                                    letters=b"FTOq", effect=Command.SET)),
    (b"ms k 5 MA", req(Command.META_SET, (b"k",), 5, 0, 0, protocol=M, letters=b"M", effect=Command.APPEND)),
    (b"ms k 5 C99 ME", req(Command.META_SET, (b"k",), 5, 0, 0, protocol=M, letters=b"CM", effect=Command.ADD)),
    (b"ms k 5 C99", req(Command.META_SET, (b"k",), 5, 0, 0, protocol=M, letters=b"C", effect=Command.CAS)),
])
def test_storage_commands_count_their_data_block(head: bytes, expected: Request) -> None:
    # The data block holds \r\n and a command-looking line: it is counted, never searched.
    stream = head + b"\r\nx\r\n\nz\r\n" + b"get after\r\n"
    assert parse(stream) == [expected, req(Command.GET, (b"after",))]


def test_empty_data_block_and_bare_newline_command_line() -> None:
    assert parse(b"set k 0 0 0\n\r\nget k\n") == [req(Command.SET, (b"k",), 0, 0, 0), req(Command.GET, (b"k",))]


@pytest.mark.parametrize("line", [
    b"gte foo\r\n",  # a telnet typo: memcached answers ERROR
    b"\r\n",  # an empty line: ERROR too
    b"get\r\n",  # no key: ERROR
    b"set a b\r\n",  # wrong argument count: ERROR
    b"set k 0 0 abc\r\n",  # CLIENT_ERROR bad command line format, and no data block is read
    b"set k 0 0 -1\r\n",
    b"get " + b"a" * 251 + b"\r\n",  # key too long: CLIENT_ERROR
    b"ms k S3\r\n",  # the pre-1.6 meta set syntax is rejected by memcached 1.6
    b"incr k x\r\n",
    b"slabs reassign 1 2\r\n",
    b"lru_crawler metadump all\r\n",
])
def test_lines_memcached_answers_with_an_error_are_other_requests(line: bytes) -> None:
    assert parse(line + b"get k\r\n") == [req(Command.OTHER), req(Command.GET, (b"k",))]


def test_noreply_of_unmodelled_command_only_where_memcached_honours_it() -> None:
    events = parse(b"cache_memlimit 100 noreply\r\nfoo noreply\r\n")
    assert events == [req(Command.OTHER, noreply=True), req(Command.OTHER)]


def test_binary_garbage_command_line_in_sync_is_a_request_memcached_answers_with_error() -> None:
    events = parse(b"get a\r\n\x01\x02\xff\r\nOTHER JUNK\r\ndelete k\r\n")
    assert events == [req(Command.GET, (b"a",)), req(Command.OTHER), req(Command.OTHER), req(Command.DELETE, (b"k",))]


def test_binary_garbage_reply_line_is_skipped_and_parser_resyncs_on_next_valid_reply() -> None:
    events = parse(b"END\r\n\x01\x02\xff\r\nOTHER JUNK\r\nDELETED\r\n", response=True)
    assert events == [rep(Reply.END), Skipped(17, "bad_line", 7), rep(Reply.DELETED)]


def test_nul_ends_a_command_line() -> None:
    assert parse(b"get a\0b c\r\nset k\0 0 0 1\r\nx\r\n") == [req(Command.GET, (b"a",)), req(Command.OTHER),
                                                                   req(Command.OTHER)]


def test_meta_marks_connection_protocol_and_mixes_with_text() -> None:
    parser = RequestStreamParser()
    assert parser.protocol is None
    parser.receive(b"get a\r\n", 1)
    assert parser.protocol is Protocol.TEXT
    events = parser.receive(b"mg a v\r\nget b\r\n", 2)
    assert parser.protocol is Protocol.META
    assert [e.protocol for e in events] == [M, T]


@pytest.mark.parametrize(("line", "expected"), [
    (b"END\r\n", rep(Reply.END)),
    (b"STORED\r\n", rep(Reply.STORED)),
    (b"NOT_STORED\r\n", rep(Reply.NOT_STORED)),
    (b"EXISTS\r\n", rep(Reply.EXISTS)),
    (b"NOT_FOUND\r\n", rep(Reply.NOT_FOUND)),
    (b"DELETED\r\n", rep(Reply.DELETED)),
    (b"TOUCHED\r\n", rep(Reply.TOUCHED)),
    (b"OK\r\n", rep(Reply.OK)),
    (b"42\r\n", rep(Reply.NUMBER)),
    (b"0 \r\n", rep(Reply.NUMBER)),  # decr may space-pad the number
    (b"VERSION 1.6.18\r\n", rep(Reply.VERSION)),
    (b"STAT pid 1234\r\n", rep(Reply.STAT)),
    (b"ERROR\r\n", rep(Reply.ERROR)),
    (b"CLIENT_ERROR bad command line format\r\n", rep(Reply.CLIENT_ERROR)),
    (b"SERVER_ERROR out of memory storing object\r\n", rep(Reply.SERVER_ERROR)),
    (b"ITEM foo [5 b; 0 s]\r\n", rep(Reply.OTHER)),
    (b"RESET\r\n", rep(Reply.OTHER)),
    (b"HD\r\n", rep(Reply.HD, protocol=M)),
    (b"HD O12 kfoo c99\r\n", rep(Reply.HD, key=b"foo", opaque=b"12", protocol=M, cas=99)),
    (b"EN\r\n", rep(Reply.MISS, protocol=M)),
    (b"NF Oq\r\n", rep(Reply.NOT_FOUND, opaque=b"q", protocol=M)),
    (b"NS\r\n", rep(Reply.NOT_STORED, protocol=M)),
    (b"EX\r\n", rep(Reply.EXISTS, protocol=M)),
    (b"MN\r\n", rep(Reply.NOOP, protocol=M)),
    (b"ME k exp=-1 la=0 cas=2 fetch=yes cls=1 size=63\r\n", rep(Reply.DEBUG, key=b"k", protocol=M)),
])
def test_reply_lines(line: bytes, expected: Response) -> None:
    assert parse(line, response=True) == [expected]


def test_value_replies_carry_key_flags_and_length_and_count_their_data() -> None:
    stream = (b"VALUE k1 4294967295 5 99\r\nEND\r\n\r\nVALUE k2 0 0\r\n\r\nEND\r\n"
              b"VA 4 s4 f3 t-1 ka2V5 O77 b\r\nEN\r\n\r\nHD\r\n")
    assert parse(stream, response=True) == [
        rep(Reply.VALUE, b"k1", 5, 4294967295, cas=99),
        rep(Reply.VALUE, b"k2", 0, 0),
        rep(Reply.END),
        rep(Reply.VALUE, b"key", 4, 3, b"77", protocol=M),  # the base64 key returned is decoded
        rep(Reply.HD, protocol=M),
    ]


def test_value_split_across_many_chunks_is_counted_down_with_chunk_timestamps() -> None:
    value = b"v" * 100_000
    stream = b"set big 0 0 100000\r\n" + value + b"\r\nget big\r\n"
    chunks = [stream[i:i + 1000] for i in range(0, len(stream), 1000)]
    events, parser = parse_chunks(chunks)
    assert events == [req(Command.SET, (b"big",), 100_000, 0, 0, start=0, end=100),
                      req(Command.GET, (b"big",), start=100, end=100)]
    assert parser.stats.bytes_parsed == len(stream)


def test_command_line_split_byte_by_byte_keeps_first_and_last_chunk_timestamps() -> None:
    stream = b"get a b\r\nset k 0 0 2\r\nab\r\n"
    events, _ = parse_chunks([stream[i:i + 1] for i in range(len(stream))])
    assert events == [req(Command.GET, (b"a", b"b"), start=0, end=8),
                      req(Command.SET, (b"k",), 2, 0, 0, start=9, end=len(stream) - 1)]


def test_partial_command_at_close_is_skipped() -> None:
    parser = RequestStreamParser()
    assert parser.receive(b"get a\r\nset k 0 0 10\r\nabc", 1) == [req(Command.GET, (b"a",), start=1, end=1)]
    assert parser.close(2) == [Skipped(17, "incomplete", 2)]
    assert parser.stats.bytes_parsed == 7
    assert parser.stats.bytes_skipped == 17


def test_over_long_line_is_garbage_but_long_multi_get_is_not() -> None:
    keys = [b"k%04d" % i + b"x" * 200 for i in range(100)]  # a 20 KiB key list, as memcached accepts
    long_get = b"get " + b" ".join(keys) + b"\r\n"
    assert requests(parse(long_get)) == [req(Command.GET, tuple(keys))]
    garbage = b"x" * 9000 + b"\r\nget k\r\n"
    expected = [Skipped(9002, "line_too_long", 7), req(Command.GET, (b"k",))]
    assert parse(garbage) == expected
    events, _ = parse_chunks([garbage[i:i + 100] for i in range(0, len(garbage), 100)])
    assert [(e.length, e.reason) if type(e) is Skipped else e.command for e in events] == [
        (9002, "line_too_long"), Command.GET]
