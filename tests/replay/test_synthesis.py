"""Request encoders, key synthesis and ketama placement: the pieces a replay's fidelity rests on."""

from __future__ import annotations

import pylibmc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymemcache.client.base import Client as PyClient

from membench.protocol.encode import binary_noop, encode_binary, encode_meta, encode_text
from membench.protocol.events import Command, Protocol, Request
from membench.protocol.stream import RequestStreamParser
from membench.replay.ketama import Continuum, Distribution, one_at_a_time
from membench.replay.keys import MAX_KEY_LENGTH, KeySynthesizer
from tests.conftest import start_memcached


def parse_requests(data: bytes) -> list[Request]:
    events = RequestStreamParser().receive(data, 0)
    assert all(isinstance(event, Request) for event in events), events
    return events


def test_text_requests_exact_bytes():
    assert encode_text(Command.GET, [b"a", b"bc"]) == b"get a bc\r\n"
    assert encode_text(Command.GAT, [b"k"], ttl=30) == b"gat 30 k\r\n"
    assert encode_text(Command.SET, [b"k"], value=b"xyz", flags=5, ttl=7) == b"set k 5 7 3\r\nxyz\r\n"
    assert encode_text(Command.ADD, [b"k"], value=b"", noreply=True) == b"add k 0 0 0 noreply\r\n\r\n"
    assert encode_text(Command.CAS, [b"k"], value=b"v", cas_unique=9) == b"cas k 0 0 1 9\r\nv\r\n"
    assert encode_text(Command.DELETE, [b"k"], noreply=True) == b"delete k noreply\r\n"
    assert encode_text(Command.DECR, [b"k"], delta=3) == b"decr k 3\r\n"
    assert encode_text(Command.TOUCH, [b"k"], ttl=60) == b"touch k 60\r\n"


def test_meta_requests_exact_bytes():
    assert encode_meta(Command.GET, b"k") == b"mg k v\r\n"
    assert encode_meta(Command.GATS, b"k", ttl=9, quiet=True, opaque=4) == b"mg k v c k T9 q O4\r\n"
    assert encode_meta(Command.ADD, b"k", value=b"ab", flags=1, ttl=2) == b"ms k 2 F1 T2 ME\r\nab\r\n"
    assert encode_meta(Command.DELETE, b"k", quiet=True) == b"md k q\r\n"
    assert encode_meta(Command.DECR, b"k") == b"ma k MD D1\r\n"
    assert encode_meta(Command.STATS) == b"stats\r\n"


@pytest.mark.parametrize("command", [Command.GET, Command.SET, Command.ADD, Command.REPLACE, Command.APPEND,
                                     Command.PREPEND, Command.DELETE, Command.INCR, Command.DECR, Command.TOUCH,
                                     Command.GAT])
@pytest.mark.parametrize("quiet", [False, True])
def test_binary_requests_parse_back(command, quiet):
    value = b"0" * 17 if command in (Command.SET, Command.ADD, Command.REPLACE, Command.APPEND,
                                     Command.PREPEND) else b""
    data = encode_binary(command, b"key1", value=value, flags=3, ttl=10, quiet=quiet, opaque=77)
    (request,) = parse_requests(data)
    assert request.protocol is Protocol.BINARY
    assert request.command is command
    assert request.keys == (b"key1",)
    assert request.opaque == 77
    assert request.quiet is (quiet and command is not Command.TOUCH)
    if value:
        assert request.value_length == 17


def test_binary_multiget_and_noop_parse_back():
    data = b"".join(encode_binary(Command.GET, key, quiet=True, with_key=True, opaque=i)
                    for i, key in enumerate([b"a", b"b"])) + binary_noop(5)
    requests = parse_requests(data)
    assert [(r.command, r.keys, r.quiet) for r in requests] == [
        (Command.GET, (b"a",), True), (Command.GET, (b"b",), True), (Command.NOOP, (), False)]


def test_keys_are_valid_distinct_and_deterministic():
    hashes = list(range(0, 2**64, 2**64 // 5000))
    first = KeySynthesizer()
    keys = {first.key(h, 30) for h in hashes}
    assert len(keys) == len(hashes)
    again = KeySynthesizer()
    assert [again.key(h, 30) for h in hashes[:50]] == [first.key(h, 30) for h in hashes[:50]]
    for key in keys:
        assert len(key) == 30 and all(0x21 <= byte <= 0x7E for byte in key)
    assert len(first.key(12345, MAX_KEY_LENGTH)) == MAX_KEY_LENGTH


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(10, 250))
def test_long_keys_never_collide(a, b, length):
    keys = KeySynthesizer()
    assert (keys.key(a, length) == keys.key(b, length)) == (a == b)


def test_short_keys_resolve_collisions_up_to_the_key_space():
    full = KeySynthesizer((h * 7919, 1) for h in range(94))
    assert len({full.key(h * 7919, 1) for h in range(94)}) == 94
    assert full.merged == 0
    over = KeySynthesizer((h, 1) for h in range(95))
    assert over.merged == 1
    two = KeySynthesizer((h * 1_000_003, 2) for h in range(3000))
    assert len({two.key(h * 1_000_003, 2) for h in range(3000)}) == 3000


def test_one_at_a_time_reference_values():
    # Bob Jenkins' one-at-a-time of "a" and of the empty string.
    assert one_at_a_time(b"a") == 0xCA2E9442
    assert one_at_a_time(b"") == 0


@pytest.mark.parametrize("behaviors,distribution", [
    ({"ketama": True}, Distribution.KETAMA),
    ({"ketama_weighted": True}, Distribution.KETAMA_WEIGHTED),
])
def test_ketama_places_keys_where_pylibmc_does(behaviors, distribution):
    servers = [start_memcached() for _ in range(3)]
    try:
        client = pylibmc.Client([s.address for s in servers], behaviors=behaviors)
        continuum = Continuum([(s.host, s.port) for s in servers], distribution)
        keys = KeySynthesizer()
        names = [keys.key(h * 0x9E3779B97F4A7C15 % 2**64, 24) for h in range(1500)]
        for name in names:
            assert client.set(name.decode(), b"1")
        holder: dict[bytes, int] = {}
        for index, server in enumerate(servers):
            for name in PyClient((server.host, server.port)).get_many([n.decode() for n in names]):
                holder[name.encode()] = index
        assert len(holder) == len(names)
        assert {name: continuum.server_of(name) for name in names} == holder
        assert sorted(set(holder.values())) == [0, 1, 2]
    finally:
        for server in servers:
            server.stop()


def test_keys_in_bulk_are_the_keys_one_at_a_time():
    import numpy as np

    short = [(7, 1), (8, 1), (2**64 - 1, 9)]
    keys = KeySynthesizer(short)
    hashes = [7, 8, 2**64 - 1, 0, 2**64 - 1, 12345, 12345, 99]
    lengths = [1, 1, 9, 10, 250, 11, 20, 4]
    bulk = keys.keys(np.array(hashes, dtype=np.uint64), np.array(lengths))
    assert bulk == [keys.key(h, n) for h, n in zip(hashes, lengths, strict=True)]
    assert [len(key) for key in bulk] == lengths
    # The definition: base-94 digits of the hash (all "!" for 0, whose mix is 0 too), then of its mix, repeated.
    assert bulk[3] == b"!" * 10 and bulk[5] == bulk[6][:11]
