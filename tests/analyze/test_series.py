"""The per-window series of `analyze`: exact counts, latency percentiles within their bucket, and working-set
estimates within the HyperLogLog's error, on profiles written the way the recorder writes them."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membench.analyze import analyze_profile, series
from membench.analyze.batch import BatchView
from membench.analyze.series import bucket_upper_bound, latency_bucket
from membench.extensions import DISABLED, compiled
from membench.profile.metadata import ProfileMetadata
from membench.profile.reader import ProfileReader
from membench.profile.schema import Operation
from membench.profile.writer import ProfileWriter

START_NS = 1_700_000_000_000_000_000  # a whole second


def write(path: Path, rows: list[Operation]) -> ProfileReader:
    with ProfileWriter(path, ProfileMetadata(source="test")) as writer:
        writer.write_many(rows)
    return ProfileReader(path)


def key_hash(key: int) -> int:
    """A key's hash as a profile holds it: uniform 64 bits."""
    return int.from_bytes(hashlib.blake2b(key.to_bytes(8, "little"), digest_size=8).digest(), "little")


def get(at_ns: int, key: int, hit: bool, latency: int, batch: int) -> Operation:
    return Operation(at_ns, 0, "get", "text", key, 8, 100 if hit else None, None, None, "hit" if hit else "miss",
                     latency, batch, False)


def test_counts_per_second_are_exact_and_percentiles_within_their_bucket(tmp_path: Path) -> None:
    rows = []
    for second in range(10):
        for i in range(100 * (second + 1)):
            at = START_NS + second * 10**9 + i * 1000
            rows.append(get(at, key=key_hash(i), hit=i % 4 != 0, latency=(i % 100) + 1, batch=len(rows) + 1))
        rows.append(Operation(START_NS + second * 10**9 + 5, 0, "set", "text", 1, 8, 1000 * second, 0, 0,
                              "stored", 7, len(rows) + 1, False))
    series = analyze_profile(write(tmp_path / "p.profile", rows)).series
    assert series is not None and series.window_s == 1 and series.start_ns == START_NS
    assert series.operations == [100 * (second + 1) + 1 for second in range(10)]
    assert series.hit_ratio == [0.75] * 10
    assert series.bytes_read == [75 * (second + 1) * 100 for second in range(10)]
    assert series.bytes_written == [1000 * second for second in range(10)]
    for p50, p99 in zip(series.latency_p50_us, series.latency_p99_us, strict=True):
        assert 50 <= p50 <= 50 * 1.125 + 1 and 99 <= p99 <= 100 * 1.125 + 1
    for second, distinct in enumerate(series.distinct_keys):
        exact = 100 * (second + 1)
        assert abs(distinct - exact) <= max(3, 0.1 * exact)


def test_working_set_estimate_and_long_profiles(tmp_path: Path) -> None:
    rng = random.Random(7)
    hashes = [rng.getrandbits(64) for _ in range(40_000)]
    rows = [get(START_NS + i * 10_000, key, True, 10, i + 1) for i, key in enumerate(hashes)]
    rows += [get(START_NS + 3 * 10**9 + i, key, True, 10, 50_000 + i) for i, key in enumerate(hashes[:5] * 100)]
    rows.append(get(START_NS + 50_000 * 10**9, 1, False, 10, 10**6))  # a profile spanning about 14 hours
    series = analyze_profile(write(tmp_path / "p.profile", rows)).series
    assert series is not None and series.window_s == 5  # at most 10,000 windows
    assert abs(series.distinct_keys[0] - 40_000) <= 0.07 * 40_000  # about 2 standard errors of 3.25%
    assert series.operations[0] == 40_000 + 500 and series.operations[-1] == 1
    assert len(series.operations) == 50_000 // 5 + 1


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=200))
def test_a_latency_lies_in_its_bucket_whose_bound_is_at_most_an_eighth_above(values: list[int]) -> None:
    buckets = latency_bucket(np.array(values, dtype=np.int64))
    for value, bucket in zip(values, buckets.tolist(), strict=True):
        upper = bucket_upper_bound(bucket)
        assert value <= upper <= value * 1.125 + 1
        assert bucket == 0 or bucket_upper_bound(bucket - 1) < value


def test_expiration_times_are_told_apart_by_how_memcached_reads_them(tmp_path: Path) -> None:
    ttls = [0, 0, -1, 60, 60, 3600, 2_592_000, 2_592_001, 1_900_000_000, None]
    rows = [Operation(START_NS + i, 0, "set", "text", key_hash(i), 8, 10, 0, ttl, "stored", 5, i + 1, False)
            for i, ttl in enumerate(ttls)]
    ttl = analyze_profile(write(tmp_path / "p.profile", rows)).ttl
    assert ttl is not None and ttl.operations == 9
    assert (ttl.never, ttl.immediate, ttl.absolute) == (2, 1, 2)
    assert ttl.relative_s.count == 4 and ttl.relative_s.min == 60 and ttl.relative_s.max == 2_592_000


def test_the_compiled_series_twin_is_built_unless_extensions_are_off() -> None:
    assert DISABLED or compiled("membench.analyze._series") is not None, "run pip install -e . to build it"


def drawn_view(data: st.DataObject, rows: int) -> BatchView:
    """A batch view of `rows` rows with every per-row field drawn, for the compiled twins' differential tests."""

    def column(strategy: st.SearchStrategy, dtype: type) -> np.ndarray:
        return np.array(data.draw(st.lists(strategy, min_size=rows, max_size=rows)), dtype=dtype)

    outcome = column(st.integers(0, 2), np.int64)  # neither, hit, miss
    value_length = column(st.integers(0, 2**32 - 1), np.int64)
    stored = column(st.booleans(), bool)
    # Hashes at the edges of the rank's range: all low bits zero, one bit, or any.
    hashes = column(st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**52, 2**52 - 1, 2**64 - 1]),
                              st.integers(0, 63).map(lambda bit: 1 << bit)), np.uint64)
    answered = column(st.booleans(), bool)
    return BatchView(
        batch=None, timestamps=column(st.integers(0, 2**62), np.int64), connection=np.zeros(rows, np.int64),
        command=np.zeros(rows, np.int64), command_names=("get",), status=np.zeros(rows, np.int64),
        protocol=np.zeros(rows, np.int64),
        quiet=np.zeros(rows, bool), hit=outcome == 1, miss=outcome == 2, stored=stored,
        value_length=value_length, has_value=np.ones(rows, bool),
        latency_us=np.where(answered, column(st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)), np.int64), 0),
        answered=answered, key_hash=hashes, keyed=column(st.booleans(), bool),
        bytes_read=np.where(outcome == 1, value_length, 0), bytes_written=np.where(stored, value_length, 0),
        key_counts=None)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_compiled_and_specification_count_the_same_tables(data: st.DataObject) -> None:
    assert_twin_matches(data, "membench.analyze._series", series.specification, 4, lambda windows: (
        np.zeros((windows, 4), np.int64), np.zeros(windows, np.int64),
        np.zeros((windows, series._BUCKETS), np.int64), np.zeros((windows, series._REGISTERS), np.uint8)))


def assert_twin_matches(data: st.DataObject, twin_name: str, specification: Callable[..., None], most_groups: int,
                        new_tables: Callable[[int], tuple[np.ndarray, ...]]) -> None:
    """A compiled twin fills fresh tables exactly as its specification does, from the same drawn rows spread over
    up to `most_groups` groups (windows, connections)."""
    twin = compiled(twin_name)
    if twin is None:
        pytest.skip("extensions are off (MEMBENCH_NO_EXTENSIONS=1): nothing to compare")
    rows = data.draw(st.integers(1, 60))
    groups = data.draw(st.integers(1, most_groups))
    view = drawn_view(data, rows)
    index = np.array(data.draw(st.lists(st.integers(0, groups - 1), min_size=rows, max_size=rows)), np.intp)
    expected, got = new_tables(groups), new_tables(groups)
    specification(index, view, *expected)
    twin.count_rows(index, view, *got)
    for want, have in zip(expected, got, strict=True):
        assert want.tolist() == have.tolist()


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_windows_widen_when_rows_run_past_the_announced_span(data: st.DataObject) -> None:
    """Rows far past the span the metadata announced (a damaged profile: up to int64's ends) widen the windows
    instead of growing the tables past MAX_WINDOWS; the folded series equals one counted with the final windows
    from the start."""
    start_ns = data.draw(st.one_of(st.none(), st.just(START_NS), st.integers(-2**63, 2**63 - 1)))
    end_ns = None if start_ns is None else start_ns + data.draw(st.integers(0, 10**13))
    instants = st.one_of(st.integers(START_NS, START_NS + 10**12), st.integers(-2**63, 2**63 - 1),
                         st.sampled_from([-2**63, 2**63 - 1, 0]))
    views = []
    for _ in range(data.draw(st.integers(1, 4))):
        view = drawn_view(data, data.draw(st.integers(1, 20)))
        timestamps = data.draw(st.lists(instants, min_size=len(view.timestamps), max_size=len(view.timestamps)))
        views.append(dataclasses.replace(view, timestamps=np.array(timestamps, dtype=np.int64)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(series, "MAX_WINDOWS", 50)  # the same folding, on tables small enough to draw many cases
        widened = series.SeriesCollector(start_ns, end_ns)
        for view in views:
            widened.add(view)
        got = widened.series()
        assert got is not None and len(got.operations) <= 50 + 1
        assert sum(got.operations) == sum(len(view.timestamps) for view in views)
        assert widened.start_ns is not None
        fresh = series.SeriesCollector(widened.start_ns, widened.start_ns + got.window_s * 50 * 10**9)
        for view in views:
            fresh.add(view)
        assert fresh.series() == got
