"""A `_profile.json` whose values are of the right JSON type but past any sense is damaged, like one of the wrong
type: the metadata is rebuilt from the parts with a warning, and nothing downstream computes with the bad value."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from membench.profile.metadata import METADATA_FILE, ProfileMetadata
from membench.profile.reader import ProfileReader
from membench.profile.writer import ProfileWriter
from tests.conftest import run_membench
from tests.replay.profiles import mixed_profile, write_profile

Mutation = Callable[[dict[str, Any]], None]

MUTATIONS: dict[str, Mutation] = {
    "a health section that is a number": lambda data: data["health"].__setitem__("writer", 5),
    "a health counter that is a string": lambda data: data["health"].setdefault("writer", {}).__setitem__(
        "rows_rejected", "many"),
    "ports that are no port numbers": lambda data: data.__setitem__("ports", ["a", None, {"x": 1}]),
    "a start past int64": lambda data: data.__setitem__("start_ns", 10**30),
    "an end before int64": lambda data: data.__setitem__("end_ns", -(2**63) - 1),
    "operations given as true": lambda data: data.__setitem__("operations", True),
    "a schema version of 0": lambda data: data.__setitem__("schema_version", 0),
    "a schema version of -1": lambda data: data.__setitem__("schema_version", -1),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_values_past_any_sense_rebuild_the_metadata_from_the_parts(tmp_path: Path, mutation: str) -> None:
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    metadata = profile / METADATA_FILE
    data = json.loads(metadata.read_text())
    MUTATIONS[mutation](data)
    metadata.write_text(json.dumps(data))
    reader = ProfileReader(profile)
    assert reader.num_rows == len(mixed_profile("text").operations)
    assert [problem for problem in reader.problems if "damaged" in problem], reader.problems
    shown = run_membench("analyze", str(profile))
    assert shown.returncode == 0 and "internal error" not in shown.stderr, shown.stderr


def test_json_nested_past_the_parsers_depth_is_damaged_not_a_crash(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    (profile / METADATA_FILE).write_text("[" * 100_000 + "]" * 100_000)
    reader = ProfileReader(profile)
    assert reader.problems == [f"{METADATA_FILE} is damaged (profile metadata is not valid JSON (nested too deep)): "
                               "metadata rebuilt from the parts"]


def test_metadata_text_is_shown_as_it_is_never_as_markup_or_terminal_controls(tmp_path: Path) -> None:
    """A source or fingerprint holding rich markup once made analyze fail (MarkupError); control characters went
    to the terminal as they were."""
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    metadata = profile / METADATA_FILE
    data = json.loads(metadata.read_text())
    data["source"], data["salt_fingerprint"] = "pcap[/x] \x1b[2J\x07 done", "[red]f"
    metadata.write_text(json.dumps(data))
    shown = run_membench("analyze", str(profile))
    assert shown.returncode == 0, shown.stderr
    assert "source pcap[/x] \\x1b[2J\\x07 done" in shown.stdout and "salt fingerprint [red]f," in shown.stdout
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout


def test_health_counters_past_int64_are_kept_at_its_largest_value(tmp_path: Path) -> None:
    """A pcapng statistics block claiming 2**63 drops made the recorder write metadata its reader calls damaged,
    and analyze then said "no loss counted"."""
    profile = tmp_path / "p.profile"
    with ProfileWriter(profile, ProfileMetadata(source="test")) as writer:
        writer.write_many(mixed_profile("text").operations)
        writer.set_health({"capture": {"dropped_events": 2**64 + 5, "packets": 7}})
    reader = ProfileReader(profile)
    assert reader.problems == []
    assert reader.metadata.health["capture"] == {"dropped_events": 2**63 - 1, "packets": 7}
