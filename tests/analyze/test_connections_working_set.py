"""The per-connection breakdown and the working set per window of `analyze`, on profiles written the way the
recorder writes them: exact where the profile is small (the key sample is then every key), and within a few
percent of the truth on a sampled one."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from membench.analyze import analyze_profile, connections
from membench.analyze.working_set import working_set
from membench.extensions import DISABLED, compiled
from membench.profile.schema import Operation
from tests.analyze.test_series import START_NS, assert_twin_matches, key_hash, write


def op(at_ns: int, connection: int, command: str, key: int, status: str, size: int | None, latency: int | None,
       batch: int) -> Operation:
    return Operation(at_ns, connection, command, "text", key, 8, size, 0 if command == "set" else None,
                     0 if command == "set" else None, status, latency, batch, False)


def test_each_connection_is_broken_down_busiest_first(tmp_path: Path) -> None:
    rows = []
    for connection, operations in ((0, 5), (1, 20), (2, 10)):
        for i in range(operations):
            hit = i % 2 == 0
            rows.append(op(START_NS + (connection * 100 + i) * 1000, connection, "get", key_hash(i),
                           "hit" if hit else "miss", 50 if hit else None, 10 * (connection + 1), len(rows) + 1))
    rows.append(op(START_NS + 10**6, 2, "set", key_hash(1), "stored", 300, None, len(rows) + 1))
    connections = analyze_profile(write(tmp_path / "p.profile", rows)).connections
    assert connections.count == 3
    assert [line.connection for line in connections.busiest] == [1, 2, 0]
    busiest, middle, least = connections.busiest
    assert busiest.operations == 20 and busiest.share == 20 / 36 and busiest.hit_ratio == 0.5
    assert busiest.bytes_read == 10 * 50 and busiest.mean_latency_us == 20
    assert middle.operations == 11 and middle.bytes_written == 300 and middle.mean_latency_us == 30
    assert middle.first_ns == START_NS + 200_000 and middle.last_ns == START_NS + 10**6
    assert least.hit_ratio == 0.6


def test_working_set_per_window_is_exact_on_a_small_profile(tmp_path: Path) -> None:
    rows = []
    for second in range(3):
        # Keys 0..9 every second, twice each except key 0 (once); second 2 adds key 100, once.
        for key in range(10):
            for repeat in range(1 if key == 0 else 2):
                rows.append(op(START_NS + second * 10**9 + (key * 2 + repeat) * 1000, 0, "get", key_hash(key),
                               "hit", 10 * (key + 1), 5, len(rows) + 1))
        if second == 2:
            rows.append(op(START_NS + second * 10**9 + 900_000, 0, "get", key_hash(100), "miss", None, 5,
                           len(rows) + 1))
            rows.append(op(START_NS + second * 10**9 + 950_000, 0, "set", key_hash(100), "stored", 7000, None,
                           len(rows) + 1))
    report = analyze_profile(write(tmp_path / "p.profile", rows))
    ws = report.working_set
    assert ws is not None and ws.sample_rate == 1.0 and ws.window_s == 1
    assert ws.distinct_keys == [10, 10, 11]
    assert ws.bytes == [550, 550, 550 + 7000]
    assert ws.one_hit_wonders == [1, 1, 1] and ws.one_hit_wonder_ratio == [0.1, 0.1, round(1 / 11, 6)]


def test_a_sampled_working_set_estimates_the_whole() -> None:
    rng = random.Random(7)
    keys = np.array([key_hash(rng.randrange(200_000)) for _ in range(300_000)], dtype=np.uint64)
    times = np.sort(np.array([START_NS + rng.randrange(2 * 10**9) for _ in range(len(keys))], dtype=np.int64))
    sizes = np.full(len(keys), 100, dtype=np.int64)
    codes = np.unique(keys, return_inverse=True)[1].astype(np.int64)
    exact = working_set(codes, np.argsort(codes, kind="stable"), times, sizes, 1.0, START_NS, 1, 2)
    rate = 0.1
    sampled = (keys & np.uint64((1 << 24) - 1)) < int(rate * (1 << 24))
    estimate = working_set(codes[sampled], np.argsort(codes[sampled], kind="stable"), times[sampled],
                           sizes[sampled], rate, START_NS, 1, 2)
    for name in ("distinct_keys", "bytes", "one_hit_wonders"):
        for true, guess in zip(getattr(exact, name), getattr(estimate, name), strict=True):
            assert abs(guess - true) <= 0.05 * true, (name, true, guess)


def test_the_compiled_connections_twin_is_built_unless_extensions_are_off() -> None:
    assert DISABLED or compiled("membench.analyze._connections") is not None, "run pip install -e . to build it"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_compiled_and_specification_count_the_same_connections(data: st.DataObject) -> None:
    assert_twin_matches(data, "membench.analyze._connections", connections.specification, 5, lambda size: (
        np.zeros((size, connections._COLUMNS), np.int64), np.full(size, np.iinfo(np.int64).max),
        np.full(size, np.iinfo(np.int64).min)))
