"""The in-flight matcher on hand-made groups and reply bytes: which request each reply answers, and what it counts;
each case runs on the specification and on its compiled twin."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from membench import extensions
from membench.protocol.events import Command
from membench.replay.inflight import InFlight, Matcher
from membench.replay.requests import EXPECT_END, EXPECT_NOOP, EXPECT_QUIET, EXPECT_UNITS, INTERNAL_SLOT, Group
from membench.replay.stats import HIT, LOST, MISS, STATUS_INDEX, Meter, reply_table, suppressed_status

COMMANDS = [Command.GET, Command.SET]
GET, SET = 0, 1
STORED = STATUS_INDEX["stored"]
CORE = extensions.compiled("membench.record._core")

MatcherFactory = Callable[..., Matcher]
TWINS = [pytest.param(InFlight, id="specification"),
         pytest.param(CORE.ReplyMatcher if CORE is not None else None, id="compiled",
                      marks=pytest.mark.skipif(CORE is None, reason="the compiled core is not built or is off"))]


def matcher(factory: MatcherFactory, uniques: dict[bytes, int] | None = None, timed: bool = False
            ) -> tuple[Matcher, Meter]:
    meter = Meter([command.value for command in COMMANDS], open_loop=timed)
    inflight = factory([reply_table(c) for c in COMMANDS], [suppressed_status(c) for c in COMMANDS], timed,
                       uniques)
    return inflight, meter


def group(slot: int, expect: int, number: int, rows: int = 1, units: int = 1, seq: int = 0) -> Group:
    return Group(payload=b"", slot=slot, rows=rows, expect=expect, units=units, at_ns=0, outstanding=0, seq=seq,
                 number=number, after=(), cas=0, key=b"")


def binary_reply(opcode: int, status: int = 0, opaque: int = 0) -> bytes:
    return bytes([0x81, opcode, 0, 0, 0, 0, 0, status]) + (0).to_bytes(4, "big") + opaque.to_bytes(4, "big") \
        + bytes(8)


def latencies(meter: Meter, slot: int) -> list[int]:
    return [int(value) for chunk in meter.latencies[slot] for value in chunk]


@pytest.mark.parametrize("factory", TWINS)
def test_a_text_multi_get_counts_its_values_as_hits_and_the_rest_as_misses_at_its_end(factory) -> None:
    uniques: dict[bytes, int] = {}
    inflight, meter = matcher(factory, uniques)
    inflight.sent(group(GET, EXPECT_END, 0, rows=3, units=0), 0, 0)
    assert inflight.receive(b"VALUE a 0 1 7\r\nx\r\nEN", 4000)
    assert inflight.pending() == 1  # the END is not complete yet
    assert inflight.receive(b"D\r\n", 4999)
    inflight.collect(meter)
    assert meter.counts[GET][HIT] == 1 and meter.counts[GET][MISS] == 2
    assert inflight.answered == 0 and inflight.waiting == 0 and latencies(meter, GET) == [4]
    assert uniques == {b"a": 7}  # kept for a later cas


@pytest.mark.parametrize("factory", TWINS)
def test_a_quiet_request_is_settled_by_its_own_reply_or_by_the_silence_before_a_later_one(factory) -> None:
    inflight, meter = matcher(factory)
    inflight.sent(group(SET, EXPECT_QUIET, 0, seq=1), 0, 0)
    inflight.sent(group(SET, EXPECT_QUIET, 1, seq=2), 0, 0)
    inflight.sent(group(GET, EXPECT_UNITS, 2), 0, 0)
    assert inflight.receive(b"NS O2\r\nEN\r\n", 1000)
    inflight.collect(meter)
    assert meter.counts[SET][suppressed_status(Command.SET)] == 1  # the first: silence, its boring outcome
    assert meter.counts[SET][STATUS_INDEX["not_stored"]] == 1
    assert meter.counts[GET][MISS] == 1
    assert inflight.answered == 2 and not inflight.pending()


@pytest.mark.parametrize("factory", TWINS)
def test_quiet_binary_keys_closed_by_a_noop_count_the_replies_that_came_and_silence_for_the_rest(factory) -> None:
    inflight, meter = matcher(factory)
    inflight.sent(group(GET, EXPECT_NOOP, 0, rows=3, units=0, seq=5), 0, 0)
    hit = bytearray(binary_reply(0x0D, opaque=6))  # GetKQ of the second key: extras (flags) then the value
    hit[4] = 4
    hit[8:12] = (5).to_bytes(4, "big")
    assert inflight.receive(bytes(hit) + bytes(4) + b"v" + binary_reply(0x0A, opaque=8), 1000)
    inflight.collect(meter)
    assert meter.counts[GET][HIT] == 1 and meter.counts[GET][suppressed_status(Command.GET)] == 2
    assert inflight.answered == 0


@pytest.mark.parametrize("factory", TWINS)
def test_a_lost_connection_counts_what_was_in_flight_and_a_stop_counts_nothing(factory) -> None:
    inflight, meter = matcher(factory)
    inflight.sent(group(SET, EXPECT_UNITS, 0), 0, 0)
    inflight.sent(group(INTERNAL_SLOT, EXPECT_UNITS, INTERNAL_SLOT), 0, 0)
    inflight.abandon(LOST)
    inflight.collect(meter)
    assert meter.counts[SET][LOST] == 1 and inflight.answered == 0
    inflight.sent(group(SET, EXPECT_UNITS, 1), 0, 0)
    inflight.drop()
    inflight.collect(meter)
    assert meter.counts[SET][LOST] == 1 and meter.counts[SET][STORED] == 0 and inflight.waiting == 0
    assert inflight.answered == 1


@pytest.mark.parametrize("factory", TWINS)
def test_a_reply_with_nothing_in_flight_is_unexpected_and_garbage_ends_the_stream(factory) -> None:
    inflight, meter = matcher(factory)
    assert inflight.receive(b"STORED\r\n", 0)
    inflight.sent(group(SET, EXPECT_UNITS, 0), 0, 0)
    inflight.sent(group(SET, EXPECT_UNITS, 1), 0, 0)
    assert not inflight.receive(b"STORED\r\n\x00\x01garbage that is no reply\r\nSTORED\r\n", 0)
    inflight.collect(meter)
    assert meter.unexpected_replies == 2
    assert meter.counts[SET][STORED] == 1  # the reply before the garbage counts, nothing after it
    assert inflight.answered == 0 and inflight.pending() == 1


@pytest.mark.parametrize("factory", TWINS)
def test_open_loop_latencies_are_measured_from_the_send_and_from_the_intended_time(factory) -> None:
    inflight, meter = matcher(factory, timed=True)
    inflight.sent(group(SET, EXPECT_UNITS, 0), 10_000, 2_000)
    inflight.sent(group(SET, EXPECT_UNITS, 1), 10_000, 60_500)  # sent early: due after its reply came
    assert inflight.receive(b"STORED\r\nSTORED\r\n", 60_000)
    inflight.collect(meter)
    assert latencies(meter, SET) == [50, 50]
    assert [int(v) for chunk in meter.intended[SET] for v in chunk] == [58, -1]  # floor division, as Python's
    assert meter.requests[SET] == 2


@pytest.mark.parametrize("factory", TWINS)
def test_a_new_connection_starts_a_new_reply_stream(factory) -> None:
    inflight, meter = matcher(factory)
    inflight.sent(group(SET, EXPECT_UNITS, 0), 0, 0)
    assert inflight.receive(b"STOR", 0)
    inflight.abandon(LOST)
    inflight.reconnected()
    inflight.sent(group(SET, EXPECT_UNITS, 1), 0, 0)
    assert inflight.receive(b"STORED\r\n", 0)
    inflight.collect(meter)
    assert meter.counts[SET][LOST] == 1 and meter.counts[SET][STORED] == 1
