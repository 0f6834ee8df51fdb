"""analyze on rows whose values sit at the ends of their columns, past what the metadata announced (a damaged or
foreign profile): its memory stays bounded by the windows and connections it reports, not by the values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membench.analyze import connections, counting, series
from tests.analyze.test_series import drawn_view
from tests.conftest import run_membench
from tests.profile.parts import column_values, rewrite_column, salted_profile

INT64_MIN, INT64_MAX, UINT32_MAX = -2**63, 2**63 - 1, 2**32 - 1


def analyzed(profile: Path, tmp_path: Path) -> dict:
    out = tmp_path / "report.json"
    proc = run_membench("analyze", str(profile), "--json", str(out))
    assert proc.returncode == 0 and "internal error" not in proc.stderr, proc.stderr
    return json.loads(out.read_text())


def test_timestamps_at_the_ends_of_int64_widen_the_windows(tmp_path: Path) -> None:
    profile = salted_profile(tmp_path / "p.profile")
    timestamps = column_values(profile, "timestamp_ns")
    recorded_start = timestamps[0]
    timestamps[0], timestamps[-1] = INT64_MIN, INT64_MAX  # the metadata still says the recorded span
    rewrite_column(profile, "timestamp_ns", pa.array(timestamps, pa.int64()))
    report = analyzed(profile, tmp_path)
    windows = report["series"]["operations"]
    assert len(windows) <= series.MAX_WINDOWS + 1 and sum(windows) == len(timestamps)
    # The windows start where the metadata says the profile does (earlier rows count in the first).
    assert report["series"]["window_s"] >= (INT64_MAX - recorded_start) // 10**9 // (series.MAX_WINDOWS + 1)


def test_connection_numbers_at_the_end_of_their_column_are_reported_as_recorded(tmp_path: Path) -> None:
    profile = salted_profile(tmp_path / "p.profile")
    numbers = {0: UINT32_MAX, 1: 7, 2: UINT32_MAX - 1}
    recorded = column_values(profile, "connection")
    rewrite_column(profile, "connection", pa.array([numbers[number] for number in recorded], pa.uint32()))
    report = analyzed(profile, tmp_path)["connections"]
    assert report["count"] == 3
    assert {line["connection"]: line["operations"] for line in report["busiest"]} == {
        numbers[number]: recorded.count(number) for number in numbers}


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_connections_counted_in_slots_of_appearance_equal_those_counted_by_number(data: st.DataObject) -> None:
    """Past DENSE_CONNECTIONS, slots go in order of appearance; the breakdown is the one counted by number."""
    batches = []
    for _ in range(data.draw(st.integers(1, 4))):
        view = drawn_view(data, data.draw(st.integers(1, 30)))
        numbers = data.draw(st.lists(st.integers(0, 40), min_size=len(view.timestamps),
                                     max_size=len(view.timestamps)))
        batches.append(dataclasses.replace(view, connection=np.array(numbers, dtype=np.int64)))
    by_number = connections.ConnectionCollector()
    for view in batches:
        by_number.add(view)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(connections, "DENSE_CONNECTIONS", data.draw(st.integers(0, 41)))
        by_appearance = connections.ConnectionCollector()
        for view in batches:
            by_appearance.add(view)
    assert by_appearance.connections() == by_number.connections()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_operations_per_second_in_blocks_equal_one_dense_array(data: st.DataObject) -> None:
    """The throughput figures from seconds counted in blocks equal those from one array over the whole span."""
    span = data.draw(st.sampled_from([3, 100, 5 * 4096]))
    base = data.draw(st.sampled_from([0, 1_700_000_000, -4096 * 3 - 1]))
    batches = data.draw(st.lists(st.lists(st.integers(base, base + span), min_size=1, max_size=40), min_size=1,
                                 max_size=4))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(counting, "_DENSE_BLOCKS", data.draw(st.integers(0, 64)))
        blocks = counting.SecondCounts()
        for seconds in batches:
            nanoseconds = np.array(seconds, dtype=np.int64) * 10**9 + data.draw(st.integers(0, 10**9 - 1))
            blocks.add(nanoseconds)
    every = np.array([second for seconds in batches for second in seconds], dtype=np.int64)
    dense = np.bincount(every - every.min())
    full = dense[1:-1]
    expected = counting.SecondExtremes(
        seconds=len(dense), peak_ops=int(dense.max()), peak_offset_s=int(np.argmax(dense)),
        min_ops=int(full.min()) if full.size else None, min_offset_s=int(np.argmin(full)) + 1 if full.size else None)
    assert blocks.extremes() == expected


def test_seconds_centuries_apart_cost_two_blocks() -> None:
    seconds = counting.SecondCounts()
    seconds.add(np.array([INT64_MIN, 0, INT64_MAX, INT64_MAX], dtype=np.int64))
    extremes = seconds.extremes()
    assert extremes is not None and extremes.peak_ops == 2 and extremes.min_ops == 0
    assert extremes.seconds == INT64_MAX // 10**9 - INT64_MIN // 10**9 + 1
