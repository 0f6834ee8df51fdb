"""The public capture corpus, read by PcapFileSource and checked against what tshark says about the same files.

Expected figures were taken with tshark 4.0 on these files: `-z follow,tcp,raw,0` for the bytes of each direction
(compared by SHA-256 prefix), `-Y tcp.len>0 -T fields -e tcp.dstport` for segments per direction, `-z conv,tcp`
for endpoints, and for UDP the `udp.payload` of each datagram minus its 8-byte memcached frame header.
"""

from __future__ import annotations

import hashlib

import pytest

from membench.capture.pcap import PcapFileSource
from membench.capture.stream import Direction, Endpoint, Transport
from tests.capture.capture_builders import chunks, closed, opened, streams
from tests.conftest import PCAP_CORPUS

# file: (request bytes, response bytes, request sha256 prefix, response sha256 prefix, request segments,
#        response segments, client endpoint)
TCP_FILES = {
    "deepflow_app_traffic.pcap": (459074, 92905, "615ad8224a109e57", "2cea780e5ed1eb9d", 10138, 10153,
                                  ("10.1.80.56", 49288)),
    "deepflow_telnet_session.pcap": (35, 33, "fbd2677b9c3d25c6", "903a077b92046735", 4, 2, ("127.0.0.1", 38780)),
    "memcache_bin_tcp_counter_ops.pcap": (181, 144, "f60b5b6f691eaf7d", "548a7403892c2b71", 5, 5,
                                          ("192.168.188.37", 55316)),
    "memcache_bin_tcp_delete.pcap": (116, 99, "3b46b4ec390438a1", "1f93bf80acee7a7c", 4, 4,
                                     ("192.168.188.37", 55320)),
    "memcache_bin_tcp_multi_store_load.pcap": (408, 340, "78dc575dda746998", "783ea6a86601e8a5", 6, 8,
                                               ("192.168.188.37", 55314)),
    "memcache_bin_tcp_single_load_store.pcap": (2142, 2130, "4791887b1225c2b5", "8b9d567eef32234c", 4, 4,
                                                ("192.168.188.37", 55312)),
    "memcache_bin_tcp_stats.pcap": (113, 2087, "0ea0a26efc47c4de", "05b28ffffa5a3ded", 4, 5,
                                    ("192.168.188.37", 55322)),
    "memcache_text_tcp_counter_ops.pcap": (57, 37, "01ffe4d9fc0ffce1", "5331b7f79359cf54", 5, 4,
                                           ("192.168.188.37", 55315)),
    "memcache_text_tcp_delete.pcap": (47, 22, "543b89f45e30e478", "546f76e7d1fcb6ac", 4, 3,
                                      ("192.168.188.37", 55319)),
    "memcache_text_tcp_multi_store_load.pcap": (206, 211, "75b4471945870e4f", "b0c2e1bd67b23f2f", 5, 4,
                                                ("192.168.188.37", 55313)),
    "memcache_text_tcp_single_load_store.pcap": (2091, 2084, "7933777c1f10e311", "fbc2f8fff00fefbe", 4, 3,
                                                 ("192.168.188.37", 55311)),
    "memcache_text_tcp_stats.pcap": (43, 1187, "905846dd4b354114", "d3019978c695cff8", 4, 3,
                                     ("192.168.188.37", 55321)),
    "ndpi_stats.pcap": (7, 1028, "11e629574907d3a9", "d34604dfe8b49765", 1, 1, ("127.0.0.1", 59604)),
}

# file: (datagrams, payload bytes without frame headers, sha256 prefix, client endpoint)
UDP_FILES = {
    "memcache_bin_udp_counter_ops.pcap": (3, 130, "db6b8d6f03c52246", ("192.168.188.37", 63888)),
    "memcache_bin_udp_delete.pcap": (2, 65, "857d709dcf5eb04b", ("192.168.188.37", 56720)),
    "memcache_bin_udp_multi_store.pcap": (3, 232, "70a9c7673952772c", ("192.168.188.37", 57683)),
    "memcache_bin_udp_single_store.pcap": (1, 1064, "e5a9eb6e980d3db0", ("192.168.188.37", 65195)),
    "memcache_text_udp_counter_ops.pcap": (3, 66, "1d7a0b90356bfa0b", ("192.168.188.37", 65019)),
    "memcache_text_udp_delete.pcap": (2, 48, "edc980410b060e5b", ("192.168.188.37", 57929)),
    "memcache_text_udp_multi_store.pcap": (3, 206, "9d78099a6468255a", ("192.168.188.37", 58593)),
    "memcache_text_udp_single_store.pcap": (1, 1057, "d5ddc5f7ae6c3556", ("192.168.188.37", 61743)),
}

# tshark frame counts (`-T fields -e frame.number | wc -l`)
PACKETS = {
    "deepflow_app_traffic.pcap": 20421, "deepflow_telnet_session.pcap": 16, "memcache_bin_tcp_counter_ops.pcap": 22,
    "memcache_bin_tcp_delete.pcap": 19, "memcache_bin_tcp_multi_store_load.pcap": 26,
    "memcache_bin_tcp_single_load_store.pcap": 18, "memcache_bin_tcp_stats.pcap": 21,
    "memcache_text_tcp_counter_ops.pcap": 20, "memcache_text_tcp_delete.pcap": 17,
    "memcache_text_tcp_multi_store_load.pcap": 20, "memcache_text_tcp_single_load_store.pcap": 18,
    "memcache_text_tcp_stats.pcap": 17, "ndpi_stats.pcap": 10,
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(TCP_FILES))
def test_tcp_corpus_file_reassembles_to_tsharks_streams(name: str) -> None:
    request_bytes, response_bytes, request_sha, response_sha, request_segments, response_segments, client = (
        TCP_FILES[name])
    source = PcapFileSource(PCAP_CORPUS / name, [11211])
    items = list(source)

    [connection] = opened(items)
    assert connection.transport is Transport.TCP
    assert connection.client == Endpoint(*client)
    assert connection.server == Endpoint(connection.server.address, 11211)
    # The deepflow application capture starts inside a long-lived connection; the others have their handshake.
    assert connection.mid_stream is (name == "deepflow_app_traffic.pcap")
    assert [c.conn for c in closed(items)] == [connection.conn]
    assert isinstance(items[0], type(connection)) and items[-1] == closed(items)[0]

    data = streams(items)
    assert len(data[connection.conn, Direction.REQUEST]) == request_bytes
    assert len(data[connection.conn, Direction.RESPONSE]) == response_bytes
    assert _sha(data[connection.conn, Direction.REQUEST]) == request_sha
    assert _sha(data[connection.conn, Direction.RESPONSE]) == response_sha
    directions = [chunk.direction for chunk in chunks(items)]
    assert directions.count(Direction.REQUEST) == request_segments
    assert directions.count(Direction.RESPONSE) == response_segments

    health = source.health
    assert health.packets == PACKETS[name]
    assert health.bytes_seen == request_bytes + response_bytes
    assert (health.holes, health.bytes_missing, health.retransmitted_bytes, health.malformed_packets) == (0, 0, 0, 0)
    assert health.connections == 1
    assert health.mid_stream_connections == (1 if connection.mid_stream else 0)


@pytest.mark.parametrize("name", sorted(UDP_FILES))
def test_udp_corpus_file_strips_frame_headers(name: str) -> None:
    datagrams, payload_bytes, sha, client = UDP_FILES[name]
    source = PcapFileSource(PCAP_CORPUS / name, [11211])
    items = list(source)

    [connection] = opened(items)
    assert connection.transport is Transport.UDP
    assert connection.client == Endpoint(*client)
    assert connection.server is not None and connection.server.port == 11211
    found = chunks(items)
    assert len(found) == datagrams  # every message of these files is a single datagram
    assert {chunk.direction for chunk in found} == {Direction.REQUEST}  # noreply/quiet only: no responses
    data = streams(items)
    assert list(data) == [(connection.conn, Direction.REQUEST)]
    assert len(data[connection.conn, Direction.REQUEST]) == payload_bytes
    assert _sha(data[connection.conn, Direction.REQUEST]) == sha
    assert source.health.packets == datagrams
    assert source.health.bytes_seen == payload_bytes
    assert source.health.malformed_packets == 0


def test_text_request_stream_starts_with_the_command() -> None:
    items = list(PcapFileSource(PCAP_CORPUS / "deepflow_telnet_session.pcap", [11211]))
    data = streams(items)
    request = data[1, Direction.REQUEST]
    # Typed by hand: set, its data block in its own segment, get, quit (EXPECTED.md).
    assert request.startswith(b"set ")
    assert request.endswith(b"quit\r\n")
    assert request.count(b"\r\n") == 4


def test_chunk_timestamps_are_the_packets_own() -> None:
    items = list(PcapFileSource(PCAP_CORPUS / "deepflow_app_traffic.pcap", [11211]))
    stamps = [chunk.timestamp_ns for chunk in chunks(items)]
    assert stamps == sorted(stamps)
    # capinfos: first packet 2024-09-18 02:49:52.192987 UTC, last 02:50:08.421864, microsecond precision
    assert opened(items)[0].timestamp_ns == 1726627792192987000
    assert closed(items)[0].timestamp_ns == 1726627808421864000


def test_other_ports_are_not_memcached() -> None:
    source = PcapFileSource(PCAP_CORPUS / "memcache_text_tcp_stats.pcap", [11212])
    assert list(source) == []
    assert source.health.packets == 17
    assert source.health.connections == 0
