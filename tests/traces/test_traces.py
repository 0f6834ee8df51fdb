"""`membench import` and `membench export` on small traces made here from the formats' documentation (libCacheSim's
oracleGeneral struct, Twitter's cache-trace README, CacheLib kvtrace headers): rows as documented, round trips,
analyze and replay on an imported profile against real memcached, and bad input counted, not dropped silently."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from membench.record.anonymize import KeyHasher
from tests.conftest import Memcached, run_membench
from tests.profile.parts import column_values, rewrite_column, salted_profile

SALT = "team passphrase"


def salt_file(tmp_path: Path) -> Path:
    path = tmp_path / "salt"
    path.write_text(SALT)
    return path


def rows(profile: Path) -> list[dict[str, object]]:
    return pq.read_table(profile).to_pylist()


def oracle_trace(path: Path, records: list[tuple[int, int, int, int]]) -> Path:
    path.write_bytes(b"".join(struct.pack("<IQIq", *record) for record in records))
    return path


TWITTER = """0,nz:u:aaa,9,100,c1,get,0
0,nz:u:bbb,9,0,c2,get,0
1,nz:u:bbb,9,250,c2,set,3600
2,nz:u:aaa,9,0,c1,delete,0
2,nz:u:a,b,9,5,c3,incr,0
3,nz:u:ccc,9,7,c1,flush,0
garbage line
"""


def test_twitter_rows_are_the_trace_with_a_connection_per_client(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(TWITTER)
    result = run_membench("import", "twitter", str(trace), str(tmp_path / "p"), "--salt-file", str(salt_file(tmp_path)),
                          check=True)
    assert "imported 5 operations" in result.stderr and "unknown operations 1" in result.stderr
    got = rows(tmp_path / "p")
    assert [(r["connection"], r["command"], r["status"], r["value_length"], r["ttl"]) for r in got] == [
        (0, "get", "hit", 100, None), (1, "get", "miss", None, None), (1, "set", "stored", 250, 3600),
        (0, "delete", "deleted", None, None), (2, "incr", "ok", None, None)]
    hasher = KeyHasher.from_passphrase(SALT)
    assert got[0]["key_hash"] == hasher(b"nz:u:aaa") and got[4]["key_hash"] == hasher(b"nz:u:a,b")
    assert [r["timestamp_ns"] for r in got] == [0, 0, 10**9, 2 * 10**9, 2 * 10**9]
    health = run_membench("analyze", str(tmp_path / "p"), check=True).stdout
    assert "unknown operations" in health or "unknown_operations" in health


def test_oracle_general_round_trip_keeps_every_access_and_computes_next_access(tmp_path: Path) -> None:
    records = [(0, 7, 100, 2), (0, 8, 50, -1), (1, 7, 100, 3), (2, 7, 120, -1)]
    trace = oracle_trace(tmp_path / "in.bin", records)
    run_membench("import", "oracle-general", str(trace), str(tmp_path / "p"), check=True)
    imported = rows(tmp_path / "p")
    assert [(r["command"], r["status"], r["value_length"], r["connection"]) for r in imported] == [
        ("get", "hit", 100, 0), ("get", "hit", 50, 0), ("get", "hit", 100, 0), ("get", "hit", 120, 0)]
    run_membench("export", str(tmp_path / "p"), "oracle-general", str(tmp_path / "out.bin"), check=True)
    exported = np.frombuffer((tmp_path / "out.bin").read_bytes(), dtype="<u4,<u8,<u4,<i8").tolist()
    assert [record[0] for record in exported] == [0, 0, 1, 2]
    assert [record[2] for record in exported] == [100, 50, 100, 120]
    assert [record[3] for record in exported] == [2, -1, 3, -1]
    ids = [record[1] for record in exported]
    assert ids[0] == ids[2] == ids[3] != ids[1]
    run_membench("import", "oracle-general", str(tmp_path / "out.bin"), str(tmp_path / "again"), check=True)
    assert [r["value_length"] for r in rows(tmp_path / "again")] == [100, 50, 100, 120]


def test_a_truncated_oracle_record_is_counted(tmp_path: Path) -> None:
    trace = oracle_trace(tmp_path / "in.bin", [(0, 1, 10, -1), (1, 2, 20, -1)])
    trace.write_bytes(trace.read_bytes()[:-5])
    result = run_membench("import", "oracle-general", str(trace), str(tmp_path / "p"), check=True)
    assert "imported 1 operations" in result.stderr and "truncated record bytes 19" in result.stderr


def test_kvtrace_expands_op_count_and_cache_hits_by_header_names(tmp_path: Path) -> None:
    trace = tmp_path / "kv.csv"
    trace.write_text("op_time,key,key_size,op,op_count,size,cache_hits,ttl\n"
                     "10,k1,2,GET,3,87,2,0\n11,k2,2,SET,1,65,0,7200\n12,k1,2,DELETE,1,0,0,0\n13,k3,2,SCAN,1,0,0,0\n"
                     "14,k4,two,GET,1,5,1,0\n")
    result = run_membench("import", "kvtrace", str(trace), str(tmp_path / "p"), check=True)
    assert "unknown operations 1" in result.stderr and "unreadable lines 1" in result.stderr
    got = rows(tmp_path / "p")
    assert [(r["command"], r["status"], r["value_length"], r["ttl"]) for r in got] == [
        ("get", "hit", 87, None), ("get", "hit", 87, None), ("get", "miss", None, None), ("set", "stored", 65, 7200),
        ("delete", "deleted", None, None)]
    v1 = tmp_path / "v1.csv"
    v1.write_text("key,op,size,op_count,key_size\nk1,SET,82,1,40\nk1,GET,82,2,40\n")
    run_membench("import", "kvtrace", str(v1), str(tmp_path / "v1p"), check=True)
    assert [r["timestamp_ns"] for r in rows(tmp_path / "v1p")] == [1000, 2000, 3000]


def test_csv_export_has_twitters_columns(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(TWITTER)
    run_membench("import", "twitter", str(trace), str(tmp_path / "p"), check=True)
    run_membench("export", str(tmp_path / "p"), "csv", str(tmp_path / "out.csv"), check=True)
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[2].split(",")[2:] == ["9", "250", "1", "set", "3600"]
    run_membench("import", "twitter", str(tmp_path / "out.csv"), str(tmp_path / "again"), check=True)
    assert [r["command"] for r in rows(tmp_path / "again")] == [r["command"] for r in rows(tmp_path / "p")]
    into_profile = run_membench("export", str(tmp_path / "p"), "csv", str(tmp_path / "p" / "part-000000.parquet"))
    assert into_profile.returncode == 2 and "inside the profile" in into_profile.stderr
    assert len(rows(tmp_path / "p")) == 5  # the profile is whole


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    missing = run_membench("import", "twitter", str(tmp_path / "none.csv"), str(tmp_path / "p"))
    assert missing.returncode != 0 and missing.stderr.strip().count("\n") == 0 and "no such trace" in missing.stderr
    headerless = tmp_path / "kv.csv"
    headerless.write_text("a,b,c\n")
    result = run_membench("import", "kvtrace", str(headerless), str(tmp_path / "q"))
    assert result.returncode != 0 and "lacks key, op" in result.stderr and "Traceback" not in result.stderr


def test_a_full_disk_under_an_export_is_one_line(tmp_path: Path) -> None:
    """The kernel's refusals (here ENOSPC, from /dev/full) were reported as internal errors."""
    proc = run_membench("export", str(salted_profile(tmp_path / "p.profile")), "csv", "/dev/full")
    assert proc.returncode == 2 and proc.stderr.strip() == "membench: No space left on device", proc.stderr


def test_an_imported_trace_replays_against_memcached(tmp_path: Path, memcached: Memcached) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("".join(f"{i // 10},key{i % 7},4,{(i % 7 + 1) * 10},c{i % 3},get,0\n" for i in range(60)))
    run_membench("import", "twitter", str(trace), str(tmp_path / "p"), check=True)
    result = run_membench("replay", str(tmp_path / "p"), "--target", memcached.address, "--json",
                          str(tmp_path / "r.json"), check=True)
    assert result.returncode == 0
    assert '"hit_ratio"' in (tmp_path / "r.json").read_text()


def test_oracle_export_times_stay_in_the_format_at_int64s_ends(tmp_path: Path) -> None:
    """A damaged profile's rows before the first operation or centuries after it: 0 and the largest uint32
    second, not a wrapped-around int64."""
    profile = salted_profile(tmp_path / "p.profile")
    timestamps = column_values(profile, "timestamp_ns")
    keyed = [row for row, key in enumerate(column_values(profile, "key_hash")) if key is not None]
    timestamps[keyed[0]], timestamps[keyed[-1]] = -2**63, 2**63 - 1  # the metadata keeps the recorded span
    rewrite_column(profile, "timestamp_ns", pa.array(timestamps, pa.int64()))
    run_membench("export", str(profile), "oracle-general", str(tmp_path / "out.bin"), check=True)
    times = [record[0] for record in struct.iter_unpack("<IQIq", (tmp_path / "out.bin").read_bytes())]
    assert len(times) == len(keyed) and times[0] == 0 and times[-1] == 2**32 - 1
    assert max(times[:-1]) < 60  # the recorded rows: within the profile's first minute


def test_values_past_their_columns_are_imported_at_the_nearest_and_counted(tmp_path: Path) -> None:
    """A timestamp past int64 nanoseconds or a TTL past int64 once made the whole import an internal error."""
    trace = tmp_path / "tw.csv"
    trace.write_text(f"10000000000,k,1,10,c,get,0\n1,k,1,10,c,set,{2**63}\n2,k2,1,10,c,set,60\n")
    result = run_membench("import", "twitter", str(trace), str(tmp_path / "p"), check=True)
    assert "imported 3 operations" in result.stderr and "values out of range 2" in result.stderr
    assert [(r["timestamp_ns"], r["ttl"]) for r in rows(tmp_path / "p")] == [
        (2**63 - 1, None), (10**9, 2**63 - 1), (2 * 10**9, 60)]


def test_keys_that_are_not_utf8_stay_distinct(tmp_path: Path) -> None:
    """Decoding with replacement made every invalid byte the same character: three keys became one."""
    twitter = tmp_path / "tw.csv"
    twitter.write_bytes(b"1,a\xff,1,10,c,get,0\n2,a\xfe,1,10,c,get,0\n3,a\xc3,1,10,c,get,0\n")
    kvtrace = tmp_path / "kv.csv"
    kvtrace.write_bytes(b"key,op,size,op_count,key_size\na\xff,GET,1,1,2\na\xfe,GET,1,1,2\n")
    for name, trace, keys in (("twitter", twitter, 3), ("kvtrace", kvtrace, 2)):
        run_membench("import", name, str(trace), str(tmp_path / name), check=True)
        assert len({r["key_hash"] for r in rows(tmp_path / name)}) == keys


def test_a_kvtrace_op_count_past_the_cap_is_counted_not_expanded(tmp_path: Path) -> None:
    """A 60-byte line claiming 10**12 requests once wrote rows for weeks."""
    trace = tmp_path / "kv.csv"
    trace.write_text("key,op,size,op_count,key_size\nk,GET,100,1000000000000,1\nk2,SET,5,2,2\n")
    result = run_membench("import", "kvtrace", str(trace), str(tmp_path / "p"), check=True, timeout=60)
    cap = 1_000_000
    assert f"imported {cap + 2:,} operations" in result.stderr
    assert f"operations past the op count cap {10**12 - cap:,}" in result.stderr


def test_a_byte_order_mark_is_not_part_of_the_first_field(tmp_path: Path) -> None:
    kvtrace = tmp_path / "kv.csv"
    kvtrace.write_bytes(b"\xef\xbb\xbfkey,op,size,op_count,key_size\nk1,GET,1,1,2\n")
    twitter = tmp_path / "tw.csv"
    twitter.write_bytes(b"\xef\xbb\xbf1,k,1,10,c,get,0\n")
    for name, trace in (("kvtrace", kvtrace), ("twitter", twitter)):
        result = run_membench("import", name, str(trace), str(tmp_path / name), check=True)
        assert result.stderr.strip().endswith(f"imported 1 operations into {tmp_path / name}"), result.stderr


def test_kvtrace_cache_hits_outside_0_to_op_count_are_counted(tmp_path: Path) -> None:
    trace = tmp_path / "kv.csv"
    trace.write_text("key,op,size,op_count,key_size,cache_hits\nk1,GET,5,2,2,7\nk2,GET,5,2,2,-1\nk3,GET,5,2,2,1\n")
    result = run_membench("import", "kvtrace", str(trace), str(tmp_path / "p"), check=True)
    assert "values out of range 2" in result.stderr
    assert [r["status"] for r in rows(tmp_path / "p")] == ["hit", "hit", "miss", "miss", "hit", "miss"]


def test_export_refuses_an_existing_file_unless_forced(tmp_path: Path) -> None:
    """export replaced any file at its output without a word, where record, merge and import refuse."""
    profile = salted_profile(tmp_path / "p.profile")
    output = tmp_path / "kept.csv"
    output.write_text("a trace of its own\n")
    refused = run_membench("export", str(profile), "csv", str(output))
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [f"membench: {output} already exists and is not empty (choose another "
                                           "path, or --force to overwrite it)"]
    assert output.read_text() == "a trace of its own\n"
    forced = run_membench("export", str(profile), "csv", str(output), "--force", check=True)
    assert f"wrote {len(output.read_text().splitlines())} requests to {output}" in forced.stderr
    empty = tmp_path / "made-by-mktemp.csv"
    empty.touch()
    run_membench("export", str(profile), "csv", str(empty), check=True)  # nothing in it to lose


def test_a_directory_given_as_the_trace_is_called_one(tmp_path: Path) -> None:
    """It was reported as 'no such trace file', which sends the user looking for a file that is not missing."""
    result = run_membench("import", "twitter", str(tmp_path), str(tmp_path / "p"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"membench: {tmp_path} is a directory, not a trace file"]


@pytest.mark.parametrize(("kind", "content"), [("twitter", b""), ("kvtrace", b"key,op,size,op_count,key_size\n"),
                                               ("oracle-general", b"")],
                         ids=["twitter-empty", "kvtrace-header-only", "oracle-general-empty"])
def test_a_trace_without_requests_is_imported_with_a_warning(tmp_path: Path, kind: str, content: bytes) -> None:
    """An empty or header-only trace said only 'imported 0 operations'. As record does for a capture with nothing
    on the port, the empty profile is kept and the exit status is 0: the import is a true account of the trace."""
    trace = tmp_path / "trace"
    trace.write_bytes(content)
    result = run_membench("import", kind, str(trace), str(tmp_path / "p"), check=True)
    assert result.stderr.splitlines() == [
        f"imported 0 operations into {tmp_path / 'p'}",
        f"membench: warning: the trace {trace} holds no requests: the profile {tmp_path / 'p'} is empty"]
    assert not list((tmp_path / "p").glob("*.parquet"))


def test_a_trace_of_only_unreadable_lines_is_imported_with_a_warning(tmp_path: Path) -> None:
    trace = tmp_path / "headed.csv"
    trace.write_text("timestamp,key,key_size,value_size,client_id,operation,ttl\n")  # a header the format lacks
    result = run_membench("import", "twitter", str(trace), str(tmp_path / "p"), check=True)
    assert result.stderr.splitlines() == [
        f"imported 0 operations into {tmp_path / 'p'}; counted in its health: unknown operations 1",
        f"membench: warning: the trace {trace} holds no requests that could be read: the profile {tmp_path / 'p'} "
        "is empty"]
