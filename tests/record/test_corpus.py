"""`membench record` on the public capture corpus: exact operations as listed in tests/data/pcap/EXPECTED.md.

The profile is read back with plain pyarrow (not membench's reader), which also shows it is usable without
membench. tshark 4.0 is no oracle here: it decodes only the first text command of a segment, no memcached over
UDP, and does not pair requests with replies; the expectations below come from EXPECTED.md and the packet bytes.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import PCAP_CORPUS, run_membench

Op = tuple[str, str, int | None]  # command, status, value_length

TEXT_TCP: dict[str, list[Op]] = {
    "memcache_text_tcp_single_load_store.pcap": [
        ("set", "stored", 2046), ("get", "hit", 2046), ("quit", "noreply", None),
    ],
    "memcache_text_tcp_multi_store_load.pcap": [
        ("set", "stored", 10), ("set", "stored", 20), ("set", "stored", 100),
        ("get", "miss", None), ("get", "hit", 100), ("get", "hit", 20), ("get", "hit", 10), ("get", "miss", None),
        ("quit", "noreply", None),
    ],
    "memcache_text_tcp_counter_ops.pcap": [
        ("set", "stored", 1), ("incr", "ok", None), ("decr", "ok", None), ("get", "hit", 1), ("quit", "noreply", None),
    ],
    "memcache_text_tcp_delete.pcap": [
        ("set", "stored", 3), ("delete", "deleted", None), ("get", "miss", None), ("quit", "noreply", None),
    ],
    "memcache_text_tcp_stats.pcap": [
        ("set", "stored", 3), ("get", "hit", 3), ("stats", "ok", None), ("quit", "noreply", None),
    ],
    "ndpi_stats.pcap": [("stats", "ok", None)],
    "deepflow_telnet_session.pcap": [("set", "stored", 3), ("get", "hit", 3), ("quit", "noreply", None)],
}

BINARY_TCP: dict[str, list[Op]] = {
    "memcache_bin_tcp_single_load_store.pcap": [("set", "stored", 2046), ("get", "hit", 2046), ("quit", "ok", None)],
    "memcache_bin_tcp_multi_store_load.pcap": [
        ("set", "stored", 10), ("set", "stored", 20), ("set", "stored", 100),
        ("get", "miss", None), ("get", "hit", 100), ("get", "hit", 20), ("get", "hit", 10), ("get", "miss", None),
        ("noop", "ok", None), ("quit", "ok", None),
    ],
    "memcache_bin_tcp_counter_ops.pcap": [
        ("set", "stored", 1), ("incr", "ok", None), ("decr", "ok", None), ("get", "hit", 1), ("quit", "ok", None),
    ],
    "memcache_bin_tcp_delete.pcap": [
        ("set", "stored", 3), ("delete", "deleted", None), ("get", "miss", None), ("quit", "ok", None),
    ],
    "memcache_bin_tcp_stats.pcap": [
        ("set", "stored", 3), ("get", "hit", 3), ("stats", "ok", None), ("quit", "ok", None),
    ],
}

# UDP captures hold only noreply (text) or quiet (binary) commands and no replies: outcomes are unknown.
UDP_REQUESTS = {"single_store": 1, "multi_store": 3, "delete": 2, "counter_ops": 3}


def record(tmp_path: Path, name: str) -> pa.Table:
    out = tmp_path / "out.profile"
    proc = run_membench("record", str(PCAP_CORPUS / name), str(out), "--salt", "corpus", "--quiet")
    assert proc.returncode == 0, proc.stderr
    parts = sorted(out.glob("*.parquet"))
    assert parts, "the profile holds no Parquet part"
    return pa.concat_tables(pq.read_table(p) for p in parts).sort_by([("timestamp_ns", "ascending")])


def ops_of(table: pa.Table) -> list[Op]:
    rows = table.select(["command", "status", "value_length"]).to_pylist()
    return [(r["command"], r["status"], r["value_length"]) for r in rows]


@pytest.mark.parametrize("name", sorted(TEXT_TCP | BINARY_TCP))
def test_tcp_capture_gives_exact_operations(tmp_path: Path, name: str) -> None:
    table = record(tmp_path, name)
    assert ops_of(table) == (TEXT_TCP | BINARY_TCP)[name]
    assert set(table.column("protocol").to_pylist()) == {"binary" if name in BINARY_TCP else "text"}
    assert set(table.column("connection").to_pylist()) == {0}
    hits = [r for r in table.to_pylist() if r["status"] in ("hit", "stored", "deleted")]
    assert all(r["latency_us"] is not None for r in hits)


def test_multi_get_keys_share_a_batch_and_equal_keys_hash_equal(tmp_path: Path) -> None:
    table = record(tmp_path, "memcache_text_tcp_multi_store_load.pcap").to_pylist()
    get_rows = [r for r in table if r["command"] == "get"]
    assert len({r["batch"] for r in get_rows}) == 1
    set_hash = {r["value_length"]: r["key_hash"] for r in table if r["command"] == "set"}
    hit_hash = {r["value_length"]: r["key_hash"] for r in get_rows if r["status"] == "hit"}
    assert set_hash == hit_hash  # k1/k2/k3 stored and then read back hash alike
    assert [r["key_length"] for r in get_rows] == [1, 2, 2, 2, 1]


@pytest.mark.parametrize("kind", sorted(UDP_REQUESTS))
@pytest.mark.parametrize("protocol", ["text", "bin"])
def test_udp_capture(tmp_path: Path, kind: str, protocol: str) -> None:
    table = record(tmp_path, f"memcache_{protocol}_udp_{kind}.pcap")
    assert table.num_rows == UDP_REQUESTS[kind]
    assert set(table.column("status").to_pylist()) == {"noreply"}
    assert all(table.column("quiet").to_pylist())
    assert set(table.column("protocol").to_pylist()) == {"binary" if protocol == "bin" else "text"}


def test_deepflow_application_traffic(tmp_path: Path) -> None:
    table = record(tmp_path, "deepflow_app_traffic.pcap")
    rows = table.select(["command", "status", "batch", "latency_us"]).to_pylist()
    requests: dict[str, set[int]] = {}
    for r in rows:
        requests.setdefault(r["command"], set()).add(r["batch"])
    assert {c: len(b) for c, b in requests.items()} == {"get": 10_041, "gets": 112, "set": 1}
    retrieval_batches_with_hit = {r["batch"] for r in rows if r["command"] in ("get", "gets") and r["status"] == "hit"}
    assert len(retrieval_batches_with_hit) == 122
    # The capture ends between the last get and its reply: that one request is rightly unanswered.
    assert [r["status"] for r in rows].count("unanswered") == 1
    latencies = sorted(r["latency_us"] for r in rows if r["latency_us"] is not None)
    p50 = latencies[len(latencies) // 2]
    p90 = latencies[len(latencies) * 9 // 10]
    assert 10 <= p50 <= 20 and 25 <= p90 <= 40
