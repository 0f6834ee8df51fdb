"""The plan: recorded pipelining depth, schedules, folding and spreading of connections, multi-server splits."""

from __future__ import annotations

from dataclasses import dataclass

from membench.replay.ketama import Continuum
from membench.replay.keys import KeySynthesizer
from membench.replay.options import ReplayOptions, Timing
from membench.replay.pass_plan import NEVER_NS
from membench.replay.plan import Planner, Stream
from membench.replay.requests import EXPECT_END, EXPECT_NONE, EXPECT_NOOP, EXPECT_QUIET, EXPECT_UNITS, Group
from membench.replay.survey import BatchSource, survey
from tests.replay.profiles import T0, ProfileBuilder


@dataclass
class Planned:
    commands: list[str]
    streams: list[tuple[Stream, list[Group]]]  # the streams that send something, with all they send


def planned(planner: Planner, source: BatchSource) -> Planned:
    groups: list[list[Group]] = [[] for _ in planner.streams]
    for planned_slice in planner.plan(source):
        for index, chunk in planned_slice:
            groups[index].extend(chunk)
    return Planned(planner.commands, [(stream, sent) for stream, sent in zip(planner.streams, groups, strict=True)
                                      if sent])


def plan_of(profile: ProfileBuilder, targets: int = 1, **options) -> Planned:
    source = profile.source()
    found = survey(source)
    continuum = Continuum([("127.0.0.1", 20000 + i) for i in range(targets)])
    return planned(Planner(found, ReplayOptions(**options), continuum, KeySynthesizer(found.short_pairs)), source)


def test_recorded_pipelining_depth():
    profile = ProfileBuilder()
    # Five requests 10 µs apart, each answered 1 ms later: the client had 0, 1, 2, 3, 4 replies pending.
    for index in range(5):
        profile.add("get", [index], status="miss", at_ns=T0 + index * 10_000, latency_us=1000)
    # Then one long after every reply came back: depth 1 again.
    profile.add("get", [9], status="miss", at_ns=T0 + 50_000_000, latency_us=1000)
    ((_, groups),) = plan_of(profile).streams
    assert [group.outstanding for group in groups] == [0, 1, 2, 3, 4, 0]


def test_schedules_of_open_loop_timings():
    profile = ProfileBuilder()
    for index in range(4):
        profile.add("get", [index], status="miss", at_ns=T0 + index * 3_000_000)
    original = plan_of(profile, timing=Timing.ORIGINAL, speed=3).streams[0][1]
    assert [group.at_ns for group in original] == [0, 1_000_000, 2_000_000, 3_000_000]
    rate = plan_of(profile, timing=Timing.RATE, rate=1000).streams[0][1]
    assert [group.at_ns for group in rate] == [0, 1_000_000, 2_000_000, 3_000_000]


def test_schedules_beyond_int64_saturate_instead_of_wrapping_around():
    # A speed or rate this low puts every request after the first centuries away: never sent before the replay is
    # stopped (it wrapped around to "now" once, and the whole profile went out at once).
    profile = ProfileBuilder()
    for index in range(4):
        profile.add("get", [index], status="miss", at_ns=T0 + index * 3_000_000)
    for options in ({"timing": Timing.ORIGINAL, "speed": 1e-300}, {"timing": Timing.RATE, "rate": 5e-324}):
        groups = plan_of(profile, **options).streams[0][1]
        assert [group.at_ns for group in groups] == [0, NEVER_NS, NEVER_NS, NEVER_NS]


def test_fold_and_spread_keep_each_keys_order():
    profile = ProfileBuilder()
    for index in range(40):
        profile.add("set", [index % 7], status="stored", value_length=3, connection=index % 4)
    folded = plan_of(profile, connections=2)
    assert sorted(stream.connection for stream, _ in folded.streams) == [0, 1]
    spread = plan_of(profile, connections=10)
    assert len(spread.streams) > 4
    # Every key of a recorded connection stays on one replay connection.
    homes: dict[tuple[int, bytes], set[int]] = {}
    for stream, groups in spread.streams:
        for group in groups:
            key = group.payload.split(b" ")[1]
            homes.setdefault((stream.connection % 4, key), set()).add(stream.connection)
    assert all(len(connections) == 1 for connections in homes.values())


def test_multiget_is_split_per_server_and_quiet_requests_expectations():
    profile = ProfileBuilder(protocol="binary")
    profile.add("get", list(range(12)), statuses=["miss"] * 12)
    profile.add("set", [1], status="stored", value_length=5, quiet=True)
    plan = plan_of(profile, targets=3)
    get_slot = plan.commands.index("get")
    gets = [group for _, groups in plan.streams for group in groups if group.slot == get_slot]
    # One request per server holding some of the keys: GetKQ... + Noop, or a plain Get for a lone key.
    assert sum(group.rows for group in gets) == 12 and len(gets) == len({s.target for s, _ in plan.streams}) == 3
    assert all(group.expect == (EXPECT_NOOP if group.rows > 1 else EXPECT_UNITS) for group in gets)
    quiet = [group for _, groups in plan.streams for group in groups if group.expect == EXPECT_QUIET]
    assert len(quiet) == 1
    text = ProfileBuilder(protocol="text")
    text.add("get", [1, 2], statuses=["miss", "miss"])
    text.add("delete", [1], status="noreply", quiet=True)
    text.add("version")
    expects = [group.expect for group in plan_of(text).streams[0][1]]
    assert expects == [EXPECT_END, EXPECT_NONE, EXPECT_UNITS]


def test_absolute_expiry_times_become_what_was_left():
    from membench.profile.schema import Operation
    from tests.replay.profiles import source

    now_s = T0 // 1_000_000_000
    operations = [Operation(T0, 0, "set", "text", 5, 20, 3, 0, now_s + 100, "stored", 40, 1, False),
                  Operation(T0, 0, "set", "text", 6, 20, 3, 0, now_s - 5, "stored", 40, 2, False),
                  Operation(T0, 0, "set", "text", 7, 20, 3, 0, 300, "stored", 40, 3, False)]
    found = survey(source(operations))
    plan = planned(Planner(found, ReplayOptions(), Continuum([("127.0.0.1", 1)]), KeySynthesizer()),
                   source(operations))
    ttls = [group.payload.split(b"\r\n")[0].split(b" ")[3] for group in plan.streams[0][1]]
    assert ttls == [b"100", b"-1", b"300"]


def test_survey_and_plan_across_small_batches():
    from tests.replay.profiles import source

    profile = ProfileBuilder()
    profile.add("delete", [1], status="deleted")  # present, size unknown...
    profile.add("get", [2, 3, 4], statuses=["hit", "miss", "hit"], value_length=70, connection=1)
    profile.add("touch", [5], status="touched", key_length=3)
    profile.add("get", [1], status="miss")
    profile.add("get", [1], status="hit", value_length=33)  # ...until a later hit shows it
    profile.add("quit")
    for batch_size in (1, 2, 1000):
        rows = source(profile.operations, batch_size=batch_size)
        found = survey(rows)
        assert found.rows == 8 and found.requests == 6
        pairs = zip(found.warm.hashes.tolist(), found.warm.lengths.tolist(), strict=True)
        assert dict(zip(pairs, found.warm.sizes.tolist(), strict=True)) == {(1, 20): 33, (2, 20): 70, (4, 20): 70,
                                                                             (5, 3): 1}
        assert found.short_pairs == {(5, 3)}
        assert found.skipped == {"quit": 1}
        assert found.recorded == {"delete": {"deleted": 1}, "get": {"hit": 3, "miss": 2}, "touch": {"touched": 1}}
        assert list(found.connection_protocols) == [0, 1]
        planner = Planner(found, ReplayOptions(), Continuum([("127.0.0.1", 1)]), KeySynthesizer(found.short_pairs))
        streams = planned(planner, rows).streams
        # The 3-key get straddles batches of 1 or 2 rows and is still one request.
        assert [[group.rows for group in groups] for _, groups in streams] == [[1, 1, 1, 1], [3]]
