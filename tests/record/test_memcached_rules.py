"""Recording rules checked against what a real memcached does with the same bytes, read on a raw socket.

Each test sends a pipeline to memcached, records the requests and memcached's replies through the parsers and the
pairing, and compares the recorded outcomes with memcached's own `stats` deltas and with the replies it sent.
"""

from __future__ import annotations

import socket

import pyarrow as pa

from membench.profile.schema import SCHEMA, Operation
from tests.conftest import Memcached, profile_counters, stats_delta
from tests.record.memcached_exchange import (
    HASHER,
    binary_request,
    exchange,
    read_binary_replies,
    read_until,
    record,
)


def counters(operations: list[Operation]) -> dict[str, int]:
    """What the operations say memcached's counters moved by; memcached counts no command it refused to parse."""
    rows = [op._asdict() for op in operations if op.status != "client_error"]
    return profile_counters(pa.Table.from_pylist(rows, schema=SCHEMA))


def test_quiet_meta_pipeline_gives_nf_to_the_delete_not_to_the_set(memcached: Memcached) -> None:
    before = memcached.stats()
    recorded = exchange(memcached, b"set k 0 0 1\r\na\r\nms k 1 q\r\nb\r\nmd missing q\r\nmn\r\n")
    assert recorded.replies == b"STORED\r\nNF\r\nMN\r\n"
    assert recorded.statuses() == [("set", "stored"), ("ms", "stored"), ("md", "not_found"), ("mn", "ok")]
    assert counters(recorded.operations) == stats_delta(before, memcached.stats())
    assert recorded.pairing.unmatched_responses == recorded.pairing.unanswered_requests == 0


def test_each_quiet_meta_command_answers_only_what_memcached_sends_in_quiet_mode(memcached: Memcached) -> None:
    before = memcached.stats()
    # Where two quiet commands in a row could both send the one reply that came, only an opaque token tells
    # which did; real clients send one (O) in quiet pipelines, and so does this one.
    pipeline = (b"ms k 1\r\na\r\n"
                b"mg missing q v k\r\n"  # EN hidden
                b"mg k q v k\r\n"  # VA shown
                b"mg k q\r\n"  # HD of a hit shown
                b"ms k 1 q MR O1\r\nb\r\n"  # replace of an existing key: HD hidden
                b"ms absent 1 q MR O2\r\nb\r\n"  # replace of a missing key: NS shown
                b"ms absent 1 q C5\r\nb\r\n"  # compare-and-swap on a missing key: NF shown
                b"ms k 1 q C5\r\nb\r\n"  # compare-and-swap with a wrong token: EX shown
                b"md k q C5\r\n"  # EX shown
                b"md k q O3\r\n"  # HD hidden
                b"md k q O4\r\n"  # NF shown
                b"ms n 1\r\n5\r\n"
                b"ma n q O5\r\n"  # HD hidden
                b"ma missing q O6\r\n"  # NF shown
                b"ma n q v\r\n"  # VA hidden
                b"mn\r\n")
    recorded = exchange(memcached, pipeline)
    assert recorded.replies == (b"HD\r\nVA 1 kk\r\na\r\nHD\r\nNS O2\r\nNF\r\nEX\r\nEX\r\nNF O4\r\nHD\r\nNF O6\r\n"
                                b"MN\r\n")
    assert recorded.statuses() == [
        ("ms", "stored"), ("mg", "miss"), ("mg", "hit"), ("mg", "hit"), ("ms", "stored"), ("ms", "not_stored"),
        ("ms", "not_found"), ("ms", "exists"), ("md", "exists"), ("md", "deleted"), ("md", "not_found"),
        ("ms", "stored"), ("ma", "ok"), ("ma", "not_found"), ("ma", "ok"), ("mn", "ok")]
    # memcached also counts a meta C as a cas (and a failed md C as a delete miss), which the profile cannot
    # tell yet: compare the counters that do not depend on it.
    delta = stats_delta(before, memcached.stats())
    plain = ("cmd_get", "get_hits", "get_misses", "cmd_set", "delete_hits", "incr_hits", "incr_misses")
    assert {name: counters(recorded.operations)[name] for name in plain} == {name: delta[name] for name in plain}
    assert recorded.pairing.unmatched_responses == recorded.pairing.unanswered_requests == 0


def test_quiet_arithmetic_that_creates_its_key_answers(memcached: Memcached) -> None:
    recorded = exchange(memcached, b"ma made q N0\r\nma made q N0\r\nma made2 q N0 v\r\nmn\r\n")
    assert recorded.replies == b"HD\r\nVA 1\r\n0\r\nMN\r\n"
    assert recorded.statuses() == [("ma", "ok"), ("ma", "ok"), ("ma", "ok"), ("mn", "ok")]
    assert recorded.pairing.unmatched_responses == recorded.pairing.unanswered_requests == 0


def test_a_key_sent_as_text_binary_or_base64_meta_has_one_hash_and_length(memcached: Memcached) -> None:
    # memcached returns the key as stored: as text after a text set, in base64 marked `b` after a base64 set.
    text = exchange(memcached, b"set key 0 0 1\r\nx\r\nmg a2V5 b v k\r\nms a2V5 1 b\r\ny\r\nmg a2V5 b k v\r\n"
                               b"mg a2V5 b q k\r\nmd a2V5 b q\r\nmn\r\n")
    assert text.replies == b"STORED\r\nVA 1 kkey\r\nx\r\nHD\r\nVA 1 ka2V5 b\r\ny\r\nHD ka2V5 b\r\nMN\r\n"
    assert text.statuses() == [("set", "stored"), ("mg", "hit"), ("ms", "stored"), ("mg", "hit"), ("mg", "hit"),
                               ("md", "deleted"), ("mn", "ok")]
    with socket.create_connection((memcached.host, memcached.port)) as sock:
        get = binary_request(0x00, b"key", opaque=7)
        sock.sendall(get)
        binary = record(get, read_binary_replies(sock, 1))
    assert binary.statuses() == [("get", "miss")]
    keyed = [op for op in text.operations + binary.operations if op.key_hash is not None]
    assert {(op.key_hash, op.key_length) for op in keyed} == {(HASHER(b"key"), 3)}


def test_invalid_base64_keys_get_client_error_and_keep_the_stream_in_step(memcached: Memcached) -> None:
    recorded = exchange(memcached, b"mg a2V b v\r\nmg !!!! b v\r\nms a2V5= 1 b\r\nx\r\nms !!!! 1 b\r\nx\r\n"
                                   b"mg a2U=a2U= b v\r\nmn\r\n")
    assert recorded.replies == (b"CLIENT_ERROR error decoding key\r\nCLIENT_ERROR error decoding key\r\n"
                                b"CLIENT_ERROR error decoding key\r\nCLIENT_ERROR error decoding key\r\nEN\r\nMN\r\n")
    assert recorded.statuses() == [("other", "client_error"), ("other", "client_error"), ("ms", "client_error"),
                                   ("ms", "client_error"), ("mg", "miss"), ("mn", "ok")]
    assert recorded.operations[4].key_hash == HASHER(b"ke")  # memcached's decoder stops at the padded group


def test_data_lengths_are_read_as_memcached_reads_them(memcached: Memcached) -> None:
    before = memcached.stats()
    pipeline = (b"set k 0 0 4294967299\r\nabc\r\n"  # only the low 32 bits count: a 3-byte value
                b"set k 0 0 3000000000\r\nabc\r\n"  # negative as an int32: refused, no data block
                b"set k 0 0 99999999999999999999\r\nabc\r\n"  # past int64: refused
                b"set k 0 99999999999999999999 1\r\nx\r\n"  # exptime past int64: refused
                b"ms k 4294967299\r\nabc\r\n"
                b"ms k 99999999999999999999\r\nabc\r\n"
                b"ms k 1 Tabc\r\nx\r\n"  # a bad flag token: refused, but the data block is read
                b"get k\r\nmn\r\n")
    recorded = exchange(memcached, pipeline)
    client_error = b"CLIENT_ERROR bad command line format\r\n"
    assert recorded.replies == (b"STORED\r\n" + (client_error + b"ERROR\r\n") * 3 + b"HD\r\n" + client_error
                                + b"ERROR\r\nCLIENT_ERROR bad token in command line format\r\n"
                                  b"VALUE k 0 3\r\nabc\r\nEND\r\nMN\r\n")
    assert recorded.statuses() == [
        ("set", "stored"), ("other", "client_error"), ("other", "error"), ("other", "client_error"),
        ("other", "error"), ("other", "client_error"), ("other", "error"), ("ms", "stored"),
        ("other", "client_error"), ("other", "error"), ("ms", "client_error"), ("get", "hit"), ("mn", "ok")]
    assert recorded.operations[0].value_length == 3
    assert counters(recorded.operations) == stats_delta(before, memcached.stats())


def test_a_value_too_large_is_swallowed_as_memcached_swallows_it(memcached: Memcached) -> None:
    # Above the test server's 2 MiB item limit: SERVER_ERROR, then memcached reads and drops the data block.
    size = 3_000_000
    pipeline = b"set big 0 0 %d\r\n" % size + b"x" * size + b"\r\nget big\r\nmn\r\n"
    with socket.create_connection((memcached.host, memcached.port)) as sock:
        sock.sendall(pipeline)
        replies = read_until(sock, b"MN\r\n")
    assert replies == b"SERVER_ERROR object too large for cache\r\nEND\r\nMN\r\n"
    assert record(pipeline, replies).statuses() == [("set", "server_error"), ("get", "miss"), ("mn", "ok")]
