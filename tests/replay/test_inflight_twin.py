"""The compiled in-flight matcher against its specification (replay/inflight.py): drawn groups, drawn reply streams
of all three protocols cut into drawn chunks (garbage included), lost connections, stops and reconnections; the
two must answer every call alike and tally the same counts, latencies, uniques and unexpected replies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membench import extensions
from membench.protocol.events import Command
from membench.replay.inflight import InFlight, Matcher
from membench.replay.requests import (
    CAS_CURRENT,
    CAS_NONE,
    EXPECT_END,
    EXPECT_NONE,
    EXPECT_NOOP,
    EXPECT_QUIET,
    EXPECT_UNITS,
    INTERNAL_SLOT,
    Group,
)
from membench.replay.stats import LOST, TIMEOUT, Meter, reply_table, suppressed_status

CORE = extensions.compiled("membench.record._core")
pytestmark = pytest.mark.skipif(CORE is None, reason="the compiled core is not built or is off: nothing to compare")

COMMANDS = [Command.GET, Command.SET, Command.INCR]
OTHER_STREAMS = 3

TEXT_REPLIES = [b"STORED\r\n", b"NOT_STORED\r\n", b"EXISTS\r\n", b"NOT_FOUND\r\n", b"DELETED\r\n", b"TOUCHED\r\n",
                b"END\r\n", b"VALUE k 0 3 123\r\nabc\r\n", b"VALUE k2 5 0\r\n\r\n", b"VALUE k3 1 2\r\nhi\r\n",
                b"STAT pid 1\r\n", b"OK\r\n", b"ERROR\r\n", b"CLIENT_ERROR bad\r\n", b"SERVER_ERROR oom\r\n",
                b"VERSION 1.6.9\r\n", b"42\r\n", b"HD\r\n", b"HD O7 c99 kfoo\r\n", b"EN\r\n", b"NF O3\r\n",
                b"NS O12\r\n", b"EX O1\r\n", b"MN\r\n", b"VA 2 O5 c11 kbar\r\nhi\r\n", b"HD Oxyz\r\n",
                b"VA 1 c18446744073709551615 kx\r\nz\r\n",
                b"\x00\x01 this is no reply\r\n"]


def binary_reply(opcode: int, status: int = 0, opaque: int = 0, cas: int = 0, key: bytes = b"",
                 extras: bytes = b"", value: bytes = b"") -> bytes:
    body = len(extras) + len(key) + len(value)
    return (bytes([0x81, opcode]) + len(key).to_bytes(2, "big") + bytes([len(extras), 0]) + status.to_bytes(2, "big")
            + body.to_bytes(4, "big") + opaque.to_bytes(4, "big") + cas.to_bytes(8, "big") + extras + key + value)


@st.composite
def binary_replies(draw: st.DrawFn) -> bytes:
    opaque = draw(st.integers(0, 12))
    cas = draw(st.sampled_from([0, 5, 2**64 - 1]))
    kind = draw(st.sampled_from(["hit", "hitk", "miss", "stored", "exists", "noop", "stat", "end", "error", "incr"]))
    if kind == "hit":
        return binary_reply(0x00, opaque=opaque, cas=cas, extras=bytes(4), value=b"val")
    if kind == "hitk":
        return binary_reply(0x0D, opaque=opaque, cas=cas, key=b"key", extras=bytes(4), value=b"v")
    if kind == "miss":
        return binary_reply(0x00, status=1, opaque=opaque)
    if kind == "stored":
        return binary_reply(0x01, opaque=opaque, cas=cas)
    if kind == "exists":
        return binary_reply(0x01, status=2, opaque=opaque)
    if kind == "noop":
        return binary_reply(0x0A, opaque=opaque)
    if kind == "stat":
        return binary_reply(0x10, opaque=opaque, key=b"pid", value=b"1")
    if kind == "end":
        return binary_reply(0x10, opaque=opaque)
    if kind == "incr":
        return binary_reply(0x05, opaque=opaque, cas=cas, value=(7).to_bytes(8, "big"))
    return binary_reply(0x01, status=0x82, opaque=opaque, value=b"out of memory")


@st.composite
def reply_streams(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        units = draw(st.lists(binary_replies(), max_size=25))
        if draw(st.integers(0, 9)) == 9:
            units.insert(draw(st.integers(0, len(units))), b"\x00garbage\r\n")
    else:
        units = draw(st.lists(st.sampled_from(TEXT_REPLIES[:-1]), max_size=25))
        if draw(st.integers(0, 9)) == 9:
            units.insert(draw(st.integers(0, len(units))), TEXT_REPLIES[-1])
    return b"".join(units)


@st.composite
def groups(draw: st.DrawFn, number: int) -> Group:
    expect = draw(st.sampled_from([EXPECT_UNITS, EXPECT_END, EXPECT_NOOP, EXPECT_QUIET]))
    internal = expect == EXPECT_UNITS and draw(st.integers(0, 9)) == 0
    return Group(payload=b"%d" % number, slot=INTERNAL_SLOT if internal else draw(st.integers(0, len(COMMANDS) - 1)),
                 rows=draw(st.integers(0 if internal else 1, 4)), expect=expect, units=draw(st.integers(0, 3)),
                 at_ns=0, outstanding=0, seq=draw(st.integers(0, 12)),
                 number=INTERNAL_SLOT if internal else number, after=(), cas=0, key=b"")


@st.composite
def admissible(draw: st.DrawFn, number: int) -> Group:
    """A group as the planner makes them for an as-fast-as-possible link: a recorded depth, requests it waits for
    on other streams, and now and then a cas or a noreply request (which the link sends itself)."""
    group = draw(groups(number))
    after = tuple(sorted(draw(st.dictionaries(st.integers(0, OTHER_STREAMS - 1), st.integers(0, 8), max_size=2))
                         .items()))
    return group._replace(outstanding=draw(st.integers(0, 3)), after=after,
                          cas=draw(st.sampled_from([CAS_NONE, CAS_NONE, CAS_NONE, CAS_CURRENT])),
                          expect=draw(st.sampled_from([group.expect] * 5 + [EXPECT_NONE])))


@st.composite
def sessions(draw: st.DrawFn) -> list[tuple]:
    """A link's calls: sends, reads of the drawn reply stream in drawn chunks, and the rarer events."""
    stream = draw(reply_streams())
    kinds = draw(st.lists(st.sampled_from(["send", "read", "send", "read", "answer", "abandon", "drop", "reconnect",
                                           "collect", "admit"]), min_size=1, max_size=60))
    actions: list[tuple] = []
    number, at, now = 0, 0, 0
    for kind in kinds:
        now += draw(st.integers(0, 5_000))
        if kind == "send":
            actions.append(("send", draw(groups(number)), now, now - draw(st.integers(-2_000, 2_000))))
            number += 1
        elif kind == "read":
            size = draw(st.integers(0, len(stream) - at))
            actions.append(("read", stream[at:at + size], now))
            at += size
        elif kind == "admit":
            chunk = [draw(admissible(number + offset)) for offset in range(draw(st.integers(0, 6)))]
            actions.append(("admit", chunk, draw(st.integers(0, len(chunk))), draw(st.integers(0, 7)), now,
                            draw(st.sampled_from([0, 1, 3])),
                            draw(st.lists(st.integers(-1, 8), min_size=OTHER_STREAMS, max_size=OTHER_STREAMS))))
            number += len(chunk)
        elif kind == "answer":
            actions.append(("answer", draw(st.integers(-1, number))))
        elif kind == "abandon":
            actions.append(("abandon", draw(st.sampled_from([LOST, TIMEOUT]))))
        else:
            actions.append((kind,))
    actions.append(("read", stream[at:], now))
    return actions


def play(matcher: Matcher, actions: list[tuple], meter: Meter, others: list[Matcher]) -> list[object]:
    """What every call answered, and the matcher's visible state after each; `others` are the streams an admitted
    group may wait for. The compiled matcher admits from a GroupBlock, and hands its payloads over in one piece."""
    seen: list[object] = []
    for action in actions:
        kind = action[0]
        if kind == "send":
            matcher.sent(*action[1:])
        elif kind == "admit":
            chunk, index, budget, now, depth, answered = action[1:]
            for other, number in zip(others, answered, strict=True):
                other.answered = number
            payloads: list[bytes] = []
            if isinstance(matcher, CORE.ReplyMatcher):
                chunk = CORE.GroupBlock.of(chunk)  # as the compiled planner hands its groups over
            seen.append((matcher.admit(chunk, index, budget, now, depth, others, payloads), b"".join(payloads)))
        elif kind == "read":
            seen.append(matcher.receive(*action[1:]))
        elif kind == "answer":
            matcher.answer(action[1])
        elif kind == "abandon":
            matcher.abandon(action[1])
        elif kind == "drop":
            matcher.drop()
        elif kind == "reconnect":
            matcher.reconnected()
        else:
            matcher.collect(meter)
        pending = matcher.pending()
        seen.append((matcher.answered, matcher.waiting, pending, matcher.oldest_sent_ns() if pending else None))
    matcher.collect(meter)
    return seen


def joined(chunks: list) -> list[int]:
    return [int(value) for chunk in chunks for value in np.asarray(chunk)]


@settings(max_examples=400, deadline=None)
@given(actions=sessions(), timed=st.booleans(), with_uniques=st.booleans())
def test_the_compiled_matcher_answers_and_tallies_as_the_specification(actions, timed, with_uniques) -> None:
    tables = [reply_table(command) for command in COMMANDS]
    suppressed = [suppressed_status(command) for command in COMMANDS]
    results = []
    for factory in (InFlight, CORE.ReplyMatcher):
        meter = Meter([command.value for command in COMMANDS], open_loop=timed)
        uniques: dict[bytes, int] | None = {} if with_uniques else None
        others = [factory(tables, suppressed, timed, uniques) for _ in range(OTHER_STREAMS)]
        seen = play(factory(tables, suppressed, timed, uniques), actions, meter, others)
        results.append((seen, meter.counts, meter.requests, [joined(c) for c in meter.latencies],
                        [joined(c) for c in meter.intended], meter.unexpected_replies, uniques))
    assert results[0] == results[1]
