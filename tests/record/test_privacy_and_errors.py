"""Keys and values never reach the disk; bad input gets one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import secrets
import socket
from pathlib import Path

from pymemcache.client.base import Client

from tests.conftest import PCAP_CORPUS, Memcached, Tcpdump, read_profile, run_membench


def test_no_key_or_value_bytes_in_the_profile(memcached: Memcached, tmp_path: Path) -> None:
    keys = [f"secret-{secrets.token_hex(8)}" for _ in range(50)]
    values = [secrets.token_hex(24).encode() for _ in range(50)]
    pcap = tmp_path / "t.pcap"
    dump = Tcpdump(pcap, memcached.port)
    client = Client((memcached.host, memcached.port), default_noreply=False)
    for key, value in zip(keys, values, strict=True):
        client.set(key, value)
        client.get(key)
    client.get_many([*keys[:10], "missing-" + secrets.token_hex(8)])
    with socket.create_connection((memcached.host, memcached.port)) as sock:
        sock.sendall(f"mg {keys[0]} v k\r\n".encode())
        sock.recv(4096)
    client.close()
    assert dump.stop() == 0
    out = tmp_path / "p.profile"
    proc = run_membench("record", str(pcap), str(out), "--port", str(memcached.port), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert read_profile(out).num_rows == 50 * 2 + 11 + 1
    blob = b"".join(p.read_bytes() for p in sorted(out.iterdir()))
    for secret in [k.encode() for k in keys] + values:
        # The random part alone: a hit on a shared prefix like "secret-" would prove nothing.
        assert secret[-16:] not in blob
    assert b"secret-" not in blob


def test_the_salt_is_not_stored_but_its_fingerprint_is(tmp_path: Path) -> None:
    out = tmp_path / "p.profile"
    proc = run_membench("record", str(PCAP_CORPUS / "memcache_text_tcp_delete.pcap"), str(out),
                        "--salt", "my-team-passphrase", "--quiet")
    assert proc.returncode == 0, proc.stderr
    blob = b"".join(p.read_bytes() for p in sorted(out.iterdir()))
    assert b"my-team-passphrase" not in blob
    fingerprint = json.loads((out / "_profile.json").read_text())["salt_fingerprint"]
    again = tmp_path / "q.profile"
    run_membench("record", str(PCAP_CORPUS / "memcache_text_tcp_delete.pcap"), str(again),
                 "--salt", "my-team-passphrase", "--quiet", check=True)
    assert json.loads((again / "_profile.json").read_text())["salt_fingerprint"] == fingerprint
    assert read_profile(out).column("key_hash").to_pylist() == read_profile(again).column("key_hash").to_pylist()
    random_salt = tmp_path / "r.profile"
    run_membench("record", str(PCAP_CORPUS / "memcache_text_tcp_delete.pcap"), str(random_salt), "--quiet",
                 check=True)
    assert json.loads((random_salt / "_profile.json").read_text())["salt_fingerprint"] != fingerprint


def assert_one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("membench: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_record_bad_inputs(tmp_path: Path) -> None:
    not_pcap = tmp_path / "notes.txt"
    not_pcap.write_text("hello, this is not a capture\n" * 10)
    assert_one_line_error(run_membench("record", str(not_pcap), str(tmp_path / "a.profile")))
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    assert_one_line_error(run_membench("record", str(empty), str(tmp_path / "b.profile")))
    assert_one_line_error(run_membench("record", "nosuchiface0", str(tmp_path / "c.profile")), "nosuchiface0")
    assert_one_line_error(run_membench("record", "ebpf:pid=abc", str(tmp_path / "d.profile")), "ebpf:pid=abc")
    proc = run_membench("record", str(PCAP_CORPUS / "ndpi_stats.pcap"), str(tmp_path / "e.profile"), "--port", "0")
    assert_one_line_error(proc, "port out of range: 0")
    assert_one_line_error(run_membench("record"), "source")


def test_existing_profile_is_not_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "p.profile"
    source = str(PCAP_CORPUS / "ndpi_stats.pcap")
    run_membench("record", source, str(out), "--quiet", check=True)
    assert_one_line_error(run_membench("record", source, str(out), "--quiet"))
    run_membench("record", source, str(out), "--quiet", "--force", check=True)


def test_truncated_pcap_keeps_what_was_read(tmp_path: Path) -> None:
    data = (PCAP_CORPUS / "deepflow_app_traffic.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) // 2 + 7])  # mid-record
    out = tmp_path / "cut.profile"
    proc = run_membench("record", str(cut), str(out), "--quiet")
    assert "Traceback" not in proc.stderr
    rows = read_profile(out).num_rows
    assert 4000 < rows < 6000


def test_analyze_bad_inputs(tmp_path: Path) -> None:
    assert_one_line_error(run_membench("analyze", str(tmp_path / "missing.profile")))
    junk = tmp_path / "junk.profile"
    junk.mkdir()
    (junk / "part-000000.parquet").write_bytes(b"PAR1 not really")
    assert_one_line_error(run_membench("analyze", str(junk)))
