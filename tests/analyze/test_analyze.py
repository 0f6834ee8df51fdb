"""`analyze` against statistics computed independently in the test (plain Python counting, numpy percentiles)."""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from membench.analyze import analyze_profile, counting, render_terminal, write_html, write_json
from membench.analyze.histogram import DENSE_LIMIT, CountHistogram
from membench.profile.reader import ProfileReader
from membench.profile.schema import Operation
from membench.profile.writer import ProfileWriter
from membench.protocol.events import RETRIEVAL_COMMANDS, STORAGE_COMMANDS
from tests.conftest import run_membench
from tests.profile.synthetic import metadata, synthetic_operations

NS = 1_000_000_000


def expected_distribution(values: list[int]) -> dict:
    if not values:
        return {"count": 0, "min": None, "mean": None, "p50": None, "p90": None, "p99": None, "p99_9": None,
                "max": None}
    array = np.array(values, dtype=np.int64)
    quantiles = {name: int(np.percentile(array, q, method="inverted_cdf"))
                 for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p99_9", 99.9))}
    return {"count": len(values), "min": min(values), "mean": pytest.approx(sum(values) / len(values)),
            **quantiles, "max": max(values)}


@pytest.fixture(scope="module")
def ops() -> list[Operation]:
    return synthetic_operations(20_000, seed=11)


@pytest.fixture(scope="module")
def report_dict(ops, tmp_path_factory):
    profile = tmp_path_factory.mktemp("analyze") / "p"
    with ProfileWriter(profile, metadata(), part_rows=1500, compact=False) as writer:
        writer.write_many(ops)
    merge_at = counting._MERGE_KEYS_AT
    counting._MERGE_KEYS_AT = 1000  # merge the per-part key counts many times over
    try:
        return analyze_profile(ProfileReader(profile)).to_dict()
    finally:
        counting._MERGE_KEYS_AT = merge_at


def test_load_requests_connections_and_duration(ops, report_dict):
    timestamps = [op.timestamp_ns for op in ops]
    assert report_dict["operations"] == len(ops)
    assert report_dict["requests"] == len({op.batch for op in ops}) < len(ops)
    assert report_dict["duration_s"] == pytest.approx((max(timestamps) - min(timestamps)) / NS)
    assert report_dict["ops_per_s"] == pytest.approx(len(ops) / report_dict["duration_s"])
    per_connection = Counter(op.connection for op in ops)
    assert report_dict["connections"]["count"] == len(per_connection) == 7
    assert report_dict["connections"]["busiest_share"] == max(per_connection.values()) / len(ops)
    assert report_dict["connections"]["operations_per_connection"] == expected_distribution(
        list(per_connection.values()))
    assert report_dict["protocols"] == dict(Counter(op.protocol for op in ops))
    assert report_dict["warnings"] == []


def test_command_mix_and_outcomes(ops, report_dict):
    commands = {c["command"]: c for c in report_dict["commands"]}
    assert {name: c["operations"] for name, c in commands.items()} == Counter(op.command for op in ops)
    for name, stats in commands.items():
        assert stats["statuses"] == Counter(op.status for op in ops if op.command == name)
        assert stats["quiet"] == sum(op.quiet for op in ops if op.command == name)
        assert stats["share"] == stats["operations"] / len(ops)
    assert [c["operations"] for c in report_dict["commands"]] == sorted(
        (c["operations"] for c in report_dict["commands"]), reverse=True)


def test_hit_ratios_per_retrieval_command_and_overall(ops, report_dict):
    ratios = {r["command"]: r for r in report_dict["hit_ratios"]}
    retrievals = {op.command for op in ops if op.command in RETRIEVAL_COMMANDS}
    assert set(ratios) == retrievals | {"all"} == {"get", "gets", "mg", "all"}
    for name in retrievals:
        hits = sum(op.command == name and op.status == "hit" for op in ops)
        misses = sum(op.command == name and op.status == "miss" for op in ops)
        assert (ratios[name]["hits"], ratios[name]["misses"]) == (hits, misses)
        assert ratios[name]["ratio"] == hits / (hits + misses)
    all_hits = sum(op.command in RETRIEVAL_COMMANDS and op.status == "hit" for op in ops)
    all_misses = sum(op.command in RETRIEVAL_COMMANDS and op.status == "miss" for op in ops)
    assert ratios["all"]["ratio"] == all_hits / (all_hits + all_misses)


def test_key_and_value_size_distributions(ops, report_dict):
    assert report_dict["keys"]["key_size"] == expected_distribution(
        [op.key_length for op in ops if op.key_length is not None])
    assert report_dict["value_sizes"]["stored"] == expected_distribution(
        [op.value_length for op in ops if op.command in STORAGE_COMMANDS and op.value_length is not None])
    assert report_dict["value_sizes"]["hit"] == expected_distribution(
        [op.value_length for op in ops if op.status == "hit"])


def test_distinct_and_hot_keys(ops, report_dict):
    per_key = Counter(op.key_hash for op in ops if op.key_hash is not None)
    ranked = sorted(per_key.values(), reverse=True)
    keyed = sum(ranked)
    keys = report_dict["keys"]
    assert (keys["keyed_operations"], keys["distinct_keys"]) == (keyed, len(per_key))
    assert keys["hottest_1pct_share"] == sum(ranked[: math.ceil(len(ranked) / 100)]) / keyed
    assert keys["hottest_10pct_share"] == sum(ranked[: math.ceil(len(ranked) / 10)]) / keyed
    assert [hot["operations"] for hot in keys["hottest"]] == ranked[:10]
    for hot in keys["hottest"]:
        assert per_key[int(hot["key_hash"], 16)] == hot["operations"]


def test_latency_per_command(ops, report_dict):
    latency = {entry["command"]: entry for entry in report_dict["latency"]}
    assert set(latency) == {op.command for op in ops} | {"all"}
    for name, entry in latency.items():
        chosen = [op for op in ops if name in ("all", op.command)]
        assert entry["us"] == expected_distribution([op.latency_us for op in chosen if op.latency_us is not None])
        assert entry["without_reply"] == sum(op.latency_us is None for op in chosen)


def test_per_second_throughput(ops, report_dict):
    per_second = Counter(op.timestamp_ns // NS for op in ops)
    first, last = min(per_second), max(per_second)
    every_second = [per_second.get(second, 0) for second in range(first, last + 1)]
    throughput = report_dict["throughput"]
    assert throughput["seconds"] == len(every_second) > 100
    assert throughput["peak_ops"] == max(every_second)
    assert every_second[throughput["peak_offset_s"]] == max(every_second)
    assert throughput["full_seconds"] == len(every_second) - 2
    assert throughput["min_ops"] == min(every_second[1:-1])
    assert every_second[throughput["min_offset_s"]] == min(every_second[1:-1])


def test_lossy_and_incomplete_profiles_are_flagged(tmp_path):
    profile = tmp_path / "p"
    with pytest.raises(RuntimeError), ProfileWriter(profile, metadata()) as writer:
        writer.write_many(synthetic_operations(50))
        writer.set_health({"capture": {"bytes_seen": 5000, "bytes_missing": 120, "holes": 3, "dropped_events": 0},
                           "parser": {"request_bytes_parsed": 3000, "response_bytes_parsed": 1800},
                           "pairing": {"unmatched_responses": 2, "requests": 50}})
        raise RuntimeError("the recorder died")
    report = analyze_profile(ProfileReader(profile))
    health = report.health
    assert (health.complete, health.lossy, health.bytes_seen, health.bytes_missing, health.bytes_parsed) == (
        False, True, 5000, 120, 4800)
    assert health.losses == {"capture.bytes_missing": 120, "capture.holes": 3, "pairing.unmatched_responses": 2}
    assert any("incomplete" in warning for warning in report.warnings)
    assert any("could not pair" in warning and "capture.holes=3" in warning
               and "pairing.unmatched_responses=2" in warning for warning in report.warnings)
    text = _rendered(report)
    assert "LOSSY" in text and "INCOMPLETE" in text and "warning: the capture lost" in text


def test_empty_profile_is_analyzed(tmp_path):
    with ProfileWriter(tmp_path / "p", metadata()):
        pass
    report = analyze_profile(ProfileReader(tmp_path / "p"))
    assert (report.operations, report.requests, report.keys.distinct_keys, report.ops_per_s) == (0, 0, 0, None)
    assert "no operations" in _rendered(report)
    write_json(report, tmp_path / "empty.json")
    assert json.loads((tmp_path / "empty.json").read_text())["operations"] == 0


def test_cli_writes_the_same_numbers_as_json_and_a_self_contained_html(ops, tmp_path):
    profile = tmp_path / "p"
    with ProfileWriter(profile, metadata()) as writer:
        writer.write_many(ops)
    result = run_membench("analyze", str(profile), "--json", str(tmp_path / "s.json"), "--html",
                          str(tmp_path / "r.html"), check=True)
    assert "Hit ratio" in result.stdout and "Server latency" in result.stdout
    expected = json.loads(json.dumps(analyze_profile(ProfileReader(profile)).to_dict()))
    assert json.loads((tmp_path / "s.json").read_text()) == expected
    html = (tmp_path / "r.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html), "everything is inline"
    assert "hit ratio" in html and "Plotly.newPlot" in html
    same = run_membench("analyze", str(profile), "--json", str(tmp_path / "both"), "--html", str(tmp_path / "both"))
    assert same.returncode == 2 and "--json and --html both name" in same.stderr and not (tmp_path / "both").exists()


def _analyze_with_files(profile, tmp_path, stdout: str) -> subprocess.CompletedProcess[str]:
    """`membench analyze` asked for --json and --html, with a stdout whose reader is gone, or none at all."""
    command = [sys.executable, "-m", "membench", "analyze", str(profile), "--json", str(tmp_path / "s.json"),
               "--html", str(tmp_path / "r.html")]
    if stdout == "closed":
        return subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *command], stderr=subprocess.PIPE, text=True,
                              timeout=120)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: every write to stdout fails (EPIPE)
    try:
        return subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)


@pytest.mark.parametrize(("stdout", "status"), [("broken-pipe", 1), ("closed", 0)])
def test_the_files_are_written_when_nobody_reads_the_table(ops, tmp_path, stdout, status):
    """`analyze p --json f | head` stopped at the broken pipe before writing f; with stdout closed (`>&-`) it was
    an internal error. The table reaching nobody is told by the exit status only, as for any broken pipe; a
    closed stdout is taken as /dev/null."""
    profile = tmp_path / "p"
    with ProfileWriter(profile, metadata()) as writer:
        writer.write_many(ops)
    result = _analyze_with_files(profile, tmp_path, stdout)
    assert (result.returncode, result.stderr) == (status, "")
    assert json.loads((tmp_path / "s.json").read_text())["operations"] == len(ops)
    assert "Plotly.newPlot" in (tmp_path / "r.html").read_text()


def test_analyze_of_a_real_capture(tmp_path):
    """deepflow_app_traffic.pcap, as counted in tests/data/pcap/EXPECTED.md."""
    from tests.conftest import PCAP_CORPUS

    profile = tmp_path / "deepflow.profile"
    run_membench("record", str(PCAP_CORPUS / "deepflow_app_traffic.pcap"), str(profile), check=True)
    report = analyze_profile(ProfileReader(profile))
    commands = {c.command: c.operations for c in report.commands}
    assert (commands["get"], commands["gets"], commands["set"]) == (10_041, 112, 1)
    overall = next(r for r in report.hit_ratios if r.command == "all")
    assert overall.hits == 122 and overall.hits + overall.misses + overall.other == 10_153
    assert report.connections.count == 1
    assert report.duration_s < 16.3
    latency = next(entry for entry in report.latency if entry.command == "all")
    assert latency.us.p50 is not None and 5 <= latency.us.p50 <= 30


def _rendered(report) -> str:
    console = Console(file=io.StringIO(), width=140, color_system=None)
    render_terminal(report, console)
    return console.file.getvalue()


def test_html_report_renders_without_a_cli(ops, tmp_path):
    profile = tmp_path / "p"
    with ProfileWriter(profile, metadata()) as writer:
        writer.write_many(ops[:500])
    write_html(analyze_profile(ProfileReader(profile)), tmp_path / "r.html")
    assert "Command mix" in (tmp_path / "r.html").read_text()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 3000), st.integers(DENSE_LIMIT, 2**32 - 1)), min_size=1, max_size=400),
       st.integers(1, 4))
def test_histogram_percentiles_equal_numpy(values, pieces):
    histogram = CountHistogram()
    for chunk in np.array_split(np.array(values, dtype=np.uint32), pieces):
        histogram.add(chunk)
    got = histogram.distribution()
    want = expected_distribution(values)
    assert {name: getattr(got, name) for name in want} == want
