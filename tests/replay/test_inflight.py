"""The in-flight matcher on hand-made groups and replies: which request each reply answers, and what it counts."""

from __future__ import annotations

from membench.protocol.events import Command, Protocol, Reply, Response
from membench.replay.inflight import InFlight
from membench.replay.plan import Group
from membench.replay.requests import EXPECT_END, EXPECT_NOOP, EXPECT_QUIET, EXPECT_UNITS, INTERNAL_SLOT
from membench.replay.stats import HIT, LOST, MISS, STATUS_INDEX, Meter, reply_table, suppressed_status

COMMANDS = [Command.GET, Command.SET]
GET, SET = 0, 1
STORED = STATUS_INDEX["stored"]


def matcher() -> tuple[InFlight, Meter, list[int]]:
    meter = Meter([command.value for command in COMMANDS], open_loop=False)
    answered: list[int] = []
    inflight = InFlight(meter, [reply_table(c) for c in COMMANDS], [suppressed_status(c) for c in COMMANDS],
                        timed=False, uniques={}, answered=answered.append)
    return inflight, meter, answered


def group(slot: int, expect: int, number: int, rows: int = 1, units: int = 1, seq: int = 0) -> Group:
    return Group(payload=b"", slot=slot, rows=rows, expect=expect, units=units, at_ns=0, outstanding=0, seq=seq,
                 number=number, after=(), cas=0, key=b"")


def reply(kind: Reply, opaque: int | None = None, key: bytes | None = None, cas: int | None = None) -> Response:
    return Response(Protocol.TEXT, kind, key, None, None, opaque, None, None, 5, 5, cas)


def test_a_text_multi_get_counts_its_values_as_hits_and_the_rest_as_misses_at_its_end() -> None:
    inflight, meter, answered = matcher()
    inflight.sent(group(GET, EXPECT_END, 0, rows=3, units=0), now=0, due=0)
    inflight.receive([reply(Reply.VALUE, key=b"a", cas=7), reply(Reply.END)], now=4000)
    assert meter.counts[GET][HIT] == 1 and meter.counts[GET][MISS] == 2
    assert answered == [0] and inflight.waiting == 0 and meter.latencies[GET] == [4]


def test_a_quiet_request_is_settled_by_its_own_reply_or_by_the_silence_before_a_later_one() -> None:
    inflight, meter, answered = matcher()
    inflight.sent(group(SET, EXPECT_QUIET, 0, seq=1), now=0, due=0)
    inflight.sent(group(SET, EXPECT_QUIET, 1, seq=2), now=0, due=0)
    inflight.sent(group(GET, EXPECT_UNITS, 2), now=0, due=0)
    inflight.receive([reply(Reply.NOT_STORED, opaque=2), reply(Reply.MISS)], now=1000)
    assert meter.counts[SET][suppressed_status(Command.SET)] == 1  # the first: silence, its boring outcome
    assert meter.counts[SET][STATUS_INDEX["not_stored"]] == 1
    assert meter.counts[GET][MISS] == 1
    assert answered == [0, 1, 2] and not inflight.entries


def test_quiet_keys_closed_by_a_noop_count_the_replies_that_came_and_silence_for_the_rest() -> None:
    inflight, meter, answered = matcher()
    inflight.sent(group(GET, EXPECT_NOOP, 0, rows=3, units=0), now=0, due=0)
    inflight.receive([reply(Reply.VALUE), reply(Reply.NOOP)], now=1000)
    assert meter.counts[GET][HIT] == 1 and meter.counts[GET][suppressed_status(Command.GET)] == 2
    assert answered == [0]


def test_a_lost_connection_counts_what_was_in_flight_and_a_stop_counts_nothing() -> None:
    inflight, meter, answered = matcher()
    inflight.sent(group(SET, EXPECT_UNITS, 0), now=0, due=0)
    inflight.sent(group(INTERNAL_SLOT, EXPECT_UNITS, INTERNAL_SLOT), now=0, due=0)
    inflight.abandon(LOST)
    assert meter.counts[SET][LOST] == 1 and answered == [0, INTERNAL_SLOT]
    inflight.sent(group(SET, EXPECT_UNITS, 1), now=0, due=0)
    inflight.drop()
    assert meter.counts[SET][LOST] == 1 and meter.counts[SET][STORED] == 0 and inflight.waiting == 0


def test_a_reply_with_nothing_in_flight_is_unexpected() -> None:
    inflight, meter, _ = matcher()
    inflight.receive([reply(Reply.STORED)], now=0)
    assert meter.unexpected_replies == 1
