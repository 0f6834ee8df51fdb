"""replay of rows a recorder never writes but a damaged or foreign profile may hold: a keyed command without a key,
a value longer than any memcached stores. They are counted as not replayed, by the survey and the plan alike, and
cost no memory; the rest of the profile replays as recorded."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from membench.replay import plan, warm
from membench.replay.survey import survey
from tests.conftest import Memcached
from tests.profile.parts import column_values, rewrite_column, salted_profile
from tests.replay.profiles import mixed_profile, source

MULTI_KEY_GET = (100, 101, 102)  # the rows of mixed_profile's one three-key get


def replayed(profile: Path, memcached: Memcached, tmp_path: Path, memory_limit: int | None = None) -> dict:
    """The replay's JSON result; under `memory_limit` bytes of address space, as a small machine would give."""

    def limit() -> None:
        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "membench", "replay", str(profile), "--target", memcached.address,
                           "--json", str(out)], capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert proc.returncode == 0 and "internal error" not in proc.stderr, proc.stderr
    assert "not replayed: " in proc.stdout + proc.stderr  # the table goes to stderr when --json is given
    return json.loads(out.read_text())


def test_rows_without_a_key_are_counted_not_sent(memcached: Memcached, tmp_path: Path) -> None:
    profile = salted_profile(tmp_path / "p.profile")
    hashes = column_values(profile, "key_hash")
    commands = column_values(profile, "command")
    lost = [7, 20, MULTI_KEY_GET[0], 150]  # a get, a set, the first key of the multi-key get, ...
    for row in lost:
        hashes[row] = None
    rewrite_column(profile, "key_hash", pa.array(hashes, pa.uint64()))
    before = memcached.stats()
    result = replayed(profile, memcached, tmp_path)
    # A request goes as its first row says: the multi-key get whose first key was lost is not sent at all.
    skipped_rows = sorted({*lost, *MULTI_KEY_GET})
    expected = Counter(f"{commands[row]} (no key)" for row in skipped_rows)
    assert result["profile"]["skipped_commands"] == dict(expected)
    assert result["ops"] == len(commands) - len(skipped_rows)
    gets = commands.count("get") - expected["get (no key)"]
    assert result["commands"]["get"]["ops"] == gets
    assert memcached.stats()["cmd_get"] - before["cmd_get"] == gets


def test_a_later_key_lost_in_a_multi_key_get_costs_only_that_key(memcached: Memcached, tmp_path: Path) -> None:
    profile = salted_profile(tmp_path / "p.profile")
    hashes = column_values(profile, "key_hash")
    hashes[MULTI_KEY_GET[1]] = None
    rewrite_column(profile, "key_hash", pa.array(hashes, pa.uint64()))
    result = replayed(profile, memcached, tmp_path)
    assert result["profile"]["skipped_commands"] == {"get (no key)": 1}
    assert result["ops"] == len(hashes) - 1


def test_values_past_1_gib_are_counted_not_built(memcached: Memcached, tmp_path: Path) -> None:
    profile = salted_profile(tmp_path / "p.profile")
    lengths = column_values(profile, "value_length")
    commands = column_values(profile, "command")
    huge = [row for row, command in enumerate(commands) if command in ("set", "add")][:5]
    for row in huge:
        lengths[row] = 2**32 - 1
    rewrite_column(profile, "value_length", pa.array(lengths, pa.uint32()))
    # 4 GiB of address space: the replay once built each 4 GiB value (then died of memory).
    result = replayed(profile, memcached, tmp_path, memory_limit=4 << 30)
    assert result["profile"]["skipped_commands"] == dict(Counter(f"{commands[row]} (value over 1 GiB)"
                                                                 for row in huge))
    assert result["ops"] == len(commands) - len(huge)


def test_a_slice_carries_at_most_its_share_of_value_bytes() -> None:
    lengths = [plan.SLICE_VALUE_BYTES, 1, plan.SLICE_VALUE_BYTES - 1, 5, None, *[1000] * 3000]
    batch = pa.RecordBatch.from_arrays([pa.array(lengths, pa.uint32())], names=["value_length"])
    slices = list(plan._slices(batch))
    assert [offset for offset, _ in slices] == list(np.cumsum([0] + [length for _, length in slices[:-1]]))
    assert sum(length for _, length in slices) == len(lengths)
    assert slices[:3] == [(0, 1), (1, 2), (3, plan.SLICE_ROWS)]
    for offset, length in slices:
        carried = sum(value or 0 for value in lengths[offset:offset + length])
        assert length == 1 or carried <= plan.SLICE_VALUE_BYTES
        assert length <= plan.SLICE_ROWS


def test_the_warm_up_loads_a_chunk_of_values_at_a_time() -> None:
    sizes = [warm._CHUNK_BYTES, 1, 1, *[100] * 5000]
    chunks = list(warm._chunks(sizes))
    assert [index for start, end in chunks for index in range(start, end)] == list(range(len(sizes)))
    assert [end - start for start, end in chunks[:2]] == [1, warm._CHUNK_KEYS]
    for start, end in chunks:
        assert end - start == 1 or sum(sizes[start:end]) <= warm._CHUNK_BYTES


def test_the_survey_skips_a_request_cut_by_a_batch_boundary_as_a_whole() -> None:
    operations = mixed_profile("text").operations
    operations[MULTI_KEY_GET[0]] = operations[MULTI_KEY_GET[0]]._replace(key_hash=None)
    whole = survey(source(operations, batch_size=1000))
    cut = survey(source(operations, batch_size=MULTI_KEY_GET[1]))  # the get's first key ends the first batch
    assert cut.skipped == whole.skipped == Counter({"get (no key)": len(MULTI_KEY_GET)})
    assert cut.recorded == whole.recorded
