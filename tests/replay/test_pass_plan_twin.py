"""The compiled pass plan (replay/_pass_plan.pyx) against its specification (replay/pass_plan.py, order.py): drawn
profiles of every replayed command, protocol and field at its limits, planned under drawn options (timings,
depth, folded or spread connections, several servers, workers, forced protocols, key order on and off); the two
must plan the same groups, byte for byte and number for number."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membench import extensions
from membench.profile.schema import Operation
from membench.protocol.events import Command, Protocol
from membench.replay import pass_plan, plan
from membench.replay.ketama import Continuum
from membench.replay.keys import KeySynthesizer
from membench.replay.options import ReplayOptions, Timing
from membench.replay.order import KeyOrder
from membench.replay.survey import survey
from tests.replay.profiles import T0, source
from tests.replay.test_plan import Planned, planned

TWIN = extensions.compiled("membench.replay._pass_plan")
pytestmark = pytest.mark.skipif(TWIN is None, reason="the compiled pass plan is not built or is off: nothing to "
                                                      "compare")

MULTI_KEY = ["get", "gets"]
ONE_KEY = ["get", "gets", "gat", "set", "add", "replace", "append", "prepend", "cas", "delete", "incr", "decr",
           "touch"]
KEYLESS = ["flush_all", "version", "stats"]
STATUSES = ["hit", "miss", "stored", "not_stored", "exists", "not_found", "deleted", "touched", "ok"]
KEY_HASHES = [0, 1, 7, 2**63, 2**64 - 1]  # few, so that requests share keys and the key order has work


@st.composite
def requests(draw: st.DrawFn, index: int, time_ns: int) -> list[Operation]:
    kind = draw(st.sampled_from(["multi", "one", "keyless"]))
    command = draw(st.sampled_from({"multi": MULTI_KEY, "one": ONE_KEY, "keyless": KEYLESS}[kind]))
    count = draw(st.integers(2, 4)) if kind == "multi" else 1
    keys: list[int | None] = draw(st.lists(st.sampled_from(KEY_HASHES), min_size=count, max_size=count)) \
        if kind != "keyless" else [None]
    protocol = draw(st.sampled_from(["text", "meta", "binary"]))
    connection = draw(st.integers(0, 3))
    quiet = draw(st.booleans())
    latency = None if quiet and draw(st.booleans()) else draw(st.sampled_from([0, 3, 900, 2**32 - 1]))
    key_length = draw(st.sampled_from([1, 2, 9, 10, 30, 250, 300]))
    value_length = draw(st.sampled_from([None, 0, 5, 1024, 3000]))
    ttl = draw(st.sampled_from([None, 0, 100, 60 * 60 * 24 * 30, 60 * 60 * 24 * 30 + 1, 1_700_000_100,
                                2**31 - 1, -1]))
    flags = draw(st.sampled_from([None, 0, 2**32 - 1]))
    counter = command in ("incr", "decr")
    delta = draw(st.sampled_from([None, 1, 2**64 - 1])) if counter else None
    initial = draw(st.sampled_from([None, 0, 2**64 - 1])) if counter else None
    return [Operation(time_ns, connection, command, protocol, key, key_length if key is not None else None,
                      value_length, flags, ttl, draw(st.sampled_from(STATUSES)), latency, index, quiet,
                      delta=delta, initial=initial) for key in keys]


@st.composite
def profiles(draw: st.DrawFn) -> list[Operation]:
    operations: list[Operation] = []
    # Times before 1970 too: an absolute TTL's seconds left floor the request's time, whatever its sign.
    time_ns = draw(st.sampled_from([T0, -7 * 10**9 + 1]))
    for index in range(draw(st.integers(1, 40))):
        time_ns += draw(st.sampled_from([0, 1_000, 500_000, 3 * 10**9]))
        operations.extend(draw(requests(index + 1, time_ns)))
    return operations


@st.composite
def options(draw: st.DrawFn) -> dict[str, object]:
    timing = draw(st.sampled_from(list(Timing)))
    return {
        "timing": timing,
        "speed": draw(st.sampled_from([1.0, 0.3, 7.0, 1e-300])),
        "rate": draw(st.sampled_from([1.0, 3333.3, 5e-324])) if timing is Timing.RATE else None,
        "pipeline": draw(st.sampled_from([None, 1, 16])),
        "connections": draw(st.sampled_from([None, 1, 2, 9])),
        "protocol": draw(st.sampled_from([None, *Protocol])),
        "key_order": draw(st.booleans()),
    }


def plan_with(implementation: str, operations: list[Operation], chosen: dict[str, object], targets: int,
              worker: int, workers: int, batch_size: int, monkeypatch: pytest.MonkeyPatch) -> Planned:
    classes = {"specification": pass_plan.PassPlan, "twin": TWIN.PassPlan}
    monkeypatch.setattr(plan, "new_pass_plan", lambda context, streams, ordered: classes[implementation](
        context, streams, ordered))
    profile = source(operations, batch_size)
    found = survey(profile)
    continuum = Continuum([("127.0.0.1", 20000 + i) for i in range(targets)])
    planner = plan.Planner(found, ReplayOptions(**chosen), continuum, KeySynthesizer(found.short_pairs), worker,
                           workers)
    return planned(planner, profile)


@settings(max_examples=300, deadline=None)
@given(operations=profiles(), chosen=options(), targets=st.integers(1, 3), workers=st.integers(1, 2),
       batch_size=st.sampled_from([1, 3, 1000]), data=st.data())
def test_twin_plans_the_same_groups(operations: list[Operation], chosen: dict[str, object], targets: int,
                                    workers: int, batch_size: int, data: st.DataObject) -> None:
    worker = data.draw(st.integers(0, workers - 1))
    with pytest.MonkeyPatch.context() as monkeypatch:
        expected = plan_with("specification", operations, chosen, targets, worker, workers, batch_size, monkeypatch)
        got = plan_with("twin", operations, chosen, targets, worker, workers, batch_size, monkeypatch)
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(calls=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1),
                                st.sampled_from([Command.GET, Command.TOUCH, Command.SET, Command.DELETE,
                                                 Command.FLUSH_ALL, Command.VERSION]),
                                st.lists(st.sampled_from([b"a", b"b", b"c"]), max_size=3)), max_size=60))
def test_twin_key_order_matches(calls: list[tuple[int, int, Command, list[bytes]]]) -> None:
    specification, twin = KeyOrder(), TWIN.KeyOrder()
    for number, (stream, server, command, keys) in enumerate(calls):
        keys = [] if command in (Command.FLUSH_ALL, Command.VERSION) else keys
        assert twin.dependencies(stream, server, number, command, keys) == specification.dependencies(
            stream, server, number, command, keys)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_twin_key_order_matches_over_many_keys_and_streams(seed: int) -> None:
    """Enough keys and readers per key that the compiled tables grow several times, then a flush_all empties them."""
    rng = np.random.default_rng(seed)
    specification, twin = KeyOrder(), TWIN.KeyOrder()
    commands = [Command.GET] * 8 + [Command.SET, Command.DELETE]
    for number in range(3000):
        stream, server = int(rng.integers(0, 300)), int(rng.integers(0, 2))
        command = Command.FLUSH_ALL if number == 1500 else commands[rng.integers(0, len(commands))]
        keys = [] if command is Command.FLUSH_ALL else [b"key:%d" % rng.integers(0, 500)
                                                        for _ in range(1 + (rng.integers(0, 4) == 0))]
        assert twin.dependencies(stream, server, number, command, keys) == specification.dependencies(
            stream, server, number, command, keys)


@pytest.mark.parametrize(("stream", "server"), [(-1, 0), (0, -1), (2**63 - 1, 0), (2**61, 0), (0, 10**9)])
def test_the_compiled_key_order_refuses_numbers_its_arrays_cannot_hold(stream: int, server: int) -> None:
    order = TWIN.KeyOrder()
    order.dependencies(3, 0, 0, Command.SET, [b"k"])
    with pytest.raises(ValueError, match="numbered from 0"):
        order.dependencies(stream, server, 1, Command.GET, [b"k"])
    assert order.dependencies(4, 0, 2, Command.GET, [b"k"]) == ((3, 0),)


def test_the_key_order_keeps_no_key_alive() -> None:
    """A key is known by its hash: holding every key of a profile of tens of millions doubled a replay's memory."""
    for order in (KeyOrder(), TWIN.KeyOrder()):
        keys = [bytes([65 + index]) * 40 for index in range(3)]
        before = [sys.getrefcount(key) for key in keys]
        order.dependencies(0, 0, 0, Command.SET, keys[:1])
        order.dependencies(1, 0, 1, Command.GET, keys[:2])
        order.dependencies(2, 0, 2, Command.GET, keys[1:])
        assert order.dependencies(3, 0, 3, Command.DELETE, keys) == ((0, 0), (1, 1), (2, 2))
        assert [sys.getrefcount(key) for key in keys] == before


def test_a_request_that_failed_half_gathered_leaves_nothing_to_the_next() -> None:
    """The compiled order takes keys as bytes only: a request with another key fails after gathering the first
    key's dependency, which the next request must not inherit."""
    twin = TWIN.KeyOrder()
    twin.dependencies(0, 0, 0, Command.SET, [b"a"])
    with pytest.raises(TypeError):
        twin.dependencies(1, 0, 1, Command.SET, [b"a", "no bytes"])
    assert twin.dependencies(2, 0, 2, Command.GET, [b"zzz"]) == ()
