"""`replay --memtier-json`: the result in memtier_benchmark's JSON shape, consistent with membench's own result."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Memcached, run_membench
from tests.replay.profiles import mixed_profile, write_profile


def test_memtier_shaped_result_agrees_with_the_native_one(memcached: Memcached, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    native, memtier = tmp_path / "r.json", tmp_path / "memtier.json"
    proc = run_membench("replay", str(profile), "--target", memcached.address, "--loop", "3", "--json", str(native),
                        "--memtier-json", str(memtier))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(native.read_text())
    stats = json.loads(memtier.read_text())["ALL STATS"]
    assert set(stats) == {"Gets", "Sets", "Totals", "Runtime"}
    totals, gets, sets = stats["Totals"], stats["Gets"], stats["Sets"]
    assert totals["Count"] == result["ops"]
    assert gets["Count"] == sum(entry["ops"] for name, entry in result["commands"].items() if name in ("get", "gets"))
    assert sets["Count"] == sum(entry["ops"] for name, entry in result["commands"].items()
                                if name in ("set", "add", "replace", "append", "prepend", "cas"))
    seconds = stats["Runtime"]["Total duration"] / 1000
    assert stats["Runtime"]["Time unit"] == "MILLISECONDS" and abs(seconds - result["duration_s"]) < 0.002
    hits = result["commands"]["get"]["hits"]
    assert abs(gets["Hits/sec"] * result["duration_s"] - hits) <= 0.01 * hits + 1
    for section in (totals, gets, sets):
        latencies = section["Percentile Latencies"]
        assert list(latencies) == ["p50.00", "p90.00", "p99.00", "p99.90"]
        assert 0 < latencies["p50.00"] <= latencies["p99.00"] <= latencies["p99.90"] <= section["Max Latency"]
        assert section["Latency"] == section["Average Latency"] > 0
    assert sum(point["Count"] for point in totals["Time-Serie"].values()) == totals["Count"]
    # merged from the get family's histograms, the section's p99 is at most the highest p99 among them
    family_p99_ms = max(result["commands"][name]["latency_us"]["p99"] for name in ("get", "gets")
                        if name in result["commands"]) / 1000
    assert gets["Percentile Latencies"]["p99.00"] <= family_p99_ms * 1.01


def test_memtier_json_path_is_checked_before_the_replay(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    proc = run_membench("replay", str(profile), "--memtier-json", str(tmp_path / "missing" / "m.json"))
    assert proc.returncode == 2 and "--memtier-json" in proc.stderr and "Traceback" not in proc.stderr
