"""File formats and link layers: synthetic captures built byte by byte, so every expected figure is exact."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membench.capture.packet import FRAGMENT, IGNORED, MALFORMED, decode
from membench.capture.pcap import PcapFileSource
from membench.capture.stream import ConnectionClosed, ConnectionOpened, Direction, Endpoint, StreamChunk, Transport
from membench.errors import MembenchError
from tests.capture.capture_builders import (
    ACK,
    CLIENT4,
    CLIENT6,
    PSH,
    SERVER4,
    SERVER6,
    SERVER_PORT,
    Packet,
    TcpConversation,
    ethernet,
    frame,
    ipv4,
    ipv6,
    pcapng_interface,
    pcapng_packet,
    pcapng_section,
    pcapng_simple_packet,
    pcapng_statistics,
    streams,
    tcp,
    udp,
    write_pcap,
)

REQ, RESP = Direction.REQUEST, Direction.RESPONSE
T0 = 1_700_000_000_123_456_000  # a whole number of microseconds, so every file format can hold it exactly


def conversation_packets(conversation: TcpConversation) -> list[bytes]:
    """Handshake, a get and its answer in two segments, then both FINs: 9 IP packets."""
    return [
        *conversation.handshake(),
        conversation.send(REQ, b"get foo\r\n"),
        conversation.send(RESP, b"VALUE foo 0 3\r\n"),
        conversation.send(RESP, b"bar\r\nEND\r\n"),
        conversation.fin(REQ),
        conversation.fin(RESP),
        conversation.send(REQ, b"", ACK),
    ]


def expected_items(client: str, server: str) -> list[object]:
    return [
        ConnectionOpened(1, Endpoint(client, 40000), Endpoint(server, SERVER_PORT), Transport.TCP, T0, False),
        StreamChunk(1, REQ, 0, b"get foo\r\n", 9, T0 + 3000),
        StreamChunk(1, RESP, 0, b"VALUE foo 0 3\r\n", 15, T0 + 4000),
        StreamChunk(1, RESP, 15, b"bar\r\nEND\r\n", 10, T0 + 5000),
        ConnectionClosed(1, T0 + 7000),
    ]


def timed(frames: list[bytes], step_ns: int = 1000) -> list[Packet]:
    return [Packet(T0 + index * step_ns, data) for index, data in enumerate(frames)]


@pytest.mark.parametrize("link", [1, 113, 276, 0, 108, 101, 12, 14])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_every_link_type_and_ip_version(tmp_path: Path, link: int, family: str) -> None:
    client, server = (CLIENT4, SERVER4) if family == "ipv4" else (CLIENT6, SERVER6)
    packets = conversation_packets(TcpConversation(client=client, server=server))
    path = write_pcap(tmp_path / "c.pcap", link, timed([frame(link, packet) for packet in packets]))
    source = PcapFileSource(path, [SERVER_PORT])
    assert list(source) == expected_items(client, server)
    assert source.health.packets == 9
    assert source.health.malformed_packets == 0
    assert source.health.bytes_seen == 34


@pytest.mark.parametrize(("link", "family"), [(228, "ipv4"), (229, "ipv6")])
def test_single_family_raw_link_types(tmp_path: Path, link: int, family: str) -> None:
    client, server = (CLIENT4, SERVER4) if family == "ipv4" else (CLIENT6, SERVER6)
    packets = conversation_packets(TcpConversation(client=client, server=server))
    path = write_pcap(tmp_path / "c.pcap", link, timed(packets))
    assert list(PcapFileSource(path, [SERVER_PORT])) == expected_items(client, server)


def test_null_link_type_in_big_endian_capture_host_order(tmp_path: Path) -> None:
    packets = conversation_packets(TcpConversation())
    frames = [(2).to_bytes(4, "big") + packet for packet in packets]  # captured on a big-endian BSD
    path = write_pcap(tmp_path / "c.pcap", 0, timed(frames))
    assert list(PcapFileSource(path, [SERVER_PORT])) == expected_items(CLIENT4, SERVER4)


@pytest.mark.parametrize("vlans", [(10,), (100, 200)])
def test_vlan_and_qinq_tags(tmp_path: Path, vlans: tuple[int, ...]) -> None:
    packets = conversation_packets(TcpConversation())
    path = write_pcap(tmp_path / "c.pcap", 1, timed([ethernet(packet, vlans) for packet in packets]))
    assert list(PcapFileSource(path, [SERVER_PORT])) == expected_items(CLIENT4, SERVER4)


def test_ipv4_options_and_ipv6_extension_headers(tmp_path: Path) -> None:
    request = b"get foo\r\n"
    with_options = ipv4(CLIENT4, SERVER4, 6, tcp(40000, SERVER_PORT, 1, 1, PSH | ACK, request),
                        options=b"\x01\x01\x01\x00")  # NOP NOP NOP EOL: a 24-byte header
    with_extensions = ipv6(CLIENT6, SERVER6, 6, tcp(40001, SERVER_PORT, 1, 1, PSH | ACK, request),
                           extensions=[(0, b"\x01\x00"), (60, b"\x01\x02\0\0"), (44, b"\0\0\0\0\0\x07")])
    path = write_pcap(tmp_path / "c.pcap", 1, timed([ethernet(with_options), ethernet(with_extensions)]))
    source = PcapFileSource(path, [SERVER_PORT])
    data = streams(source)
    assert data == {(1, REQ): request, (2, REQ): request}
    assert source.health.mid_stream_connections == 2


def test_fragments_are_counted_not_decoded(tmp_path: Path) -> None:
    segment = tcp(40000, SERVER_PORT, 1, 1, PSH | ACK, b"get foo\r\n")
    first_fragment = ipv4(CLIENT4, SERVER4, 6, segment[:16], fragment=0x2000)  # more fragments
    last_fragment = ipv4(CLIENT4, SERVER4, 6, segment[16:], fragment=2)  # offset 16 bytes
    ipv6_fragment = ipv6(CLIENT6, SERVER6, 6, segment, extensions=[(44, b"\0\x01\0\0\0\x09")])
    path = write_pcap(tmp_path / "c.pcap", 1, timed([ethernet(first_fragment), ethernet(last_fragment),
                                                     ethernet(ipv6_fragment)]))
    source = PcapFileSource(path, [SERVER_PORT])
    assert list(source) == []
    assert source.health.extra == {"ip_fragments_unsupported": 3}
    assert source.health.malformed_packets == 0


def test_malformed_packets_are_counted_never_raised(tmp_path: Path) -> None:
    good = ethernet(ipv4(CLIENT4, SERVER4, 6, tcp(40000, SERVER_PORT, 1, 1, PSH | ACK, b"version\r\n")))
    segment = tcp(40000, SERVER_PORT, 1, 1, PSH | ACK, b"x")
    bad_offset = segment[:12] + bytes([0x30]) + segment[13:]
    frames = [
        good[:10],  # shorter than an Ethernet header
        good[:14 + 12],  # IPv4 header cut
        good[:14 + 20 + 10],  # TCP header cut
        ethernet(b"\x47" + ipv4(CLIENT4, SERVER4, 6, b"")[1:]),  # IHL 7 but only 20 header bytes follow
        ethernet(bytes([0x50]) + bytes(39), ethertype=0x0800),  # IP version 5
        ethernet(ipv4(CLIENT4, SERVER4, 6, bad_offset)),  # TCP data offset 3 words
        ethernet(ipv4(CLIENT4, SERVER4, 17, udp(40000, SERVER_PORT, b"abc")[:4] + b"\0\x04\0\0")),  # UDP length 4
        good,
    ]
    path = write_pcap(tmp_path / "c.pcap", 1, timed(frames))
    source = PcapFileSource(path, [SERVER_PORT])
    assert streams(source) == {(1, REQ): b"version\r\n"}
    assert source.health.malformed_packets == 7
    assert source.health.packets == 8


def test_unknown_link_type_counts_every_packet_malformed(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "c.pcap", 147, timed([b"\0" * 60, b"\0" * 60]))
    source = PcapFileSource(path, [SERVER_PORT])
    assert list(source) == []
    assert source.health.malformed_packets == 2
    assert source.health.extra == {"unsupported_link_type_147": 1}


def test_non_ip_and_other_traffic_is_ignored(tmp_path: Path) -> None:
    frames = [
        ethernet(b"\0" * 28, ethertype=0x0806),  # ARP
        ethernet(ipv4(CLIENT4, SERVER4, 1, b"\x08\0\0\0\0\0\0\0")),  # ICMP
        ethernet(ipv4(CLIENT4, SERVER4, 6, tcp(40000, 80, 1, 1, PSH | ACK, b"GET / HTTP/1.1\r\n"))),
    ]
    source = PcapFileSource(write_pcap(tmp_path / "c.pcap", 1, timed(frames)), [SERVER_PORT])
    assert list(source) == []
    assert source.health.malformed_packets == 0
    assert source.health.packets == 3


def test_decode_fast_path_agrees_with_the_general_path() -> None:
    """The Ethernet/IPv4/TCP fast path must answer what the generic decoder answers for the same packet."""
    ports = frozenset({SERVER_PORT})
    packet = ipv4(CLIENT4, SERVER4, 6, tcp(40000, SERVER_PORT, 7, 9, PSH | ACK, b"get k\r\n"))
    framed = ethernet(packet) + b"\0\0\0\0"  # with an Ethernet trailer the IP length must exclude
    fast = decode(1, framed, 0, len(framed), ports)
    general = decode(101, packet, 0, len(packet), ports)
    assert isinstance(fast, tuple) and isinstance(general, tuple)
    assert fast[:7] == general[:7]
    assert general[:7] == (Transport.TCP, bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack("!HH", 40000, SERVER_PORT),
                           40000, SERVER_PORT, 7, 9, PSH | ACK)
    assert (fast[7] - 14, fast[8] - 14, fast[9]) == general[7:]
    assert general[7:] == (40, 47, 7)
    assert decode(1, framed, 0, len(framed), frozenset({1})) == IGNORED
    truncated = ethernet(packet)[:60]  # snaplen cut inside the payload: captured end before the wire end
    cut = decode(1, truncated, 0, len(truncated), ports)
    assert isinstance(cut, tuple) and (cut[8], cut[9]) == (60, 7)
    with_options = ipv4(CLIENT4, SERVER4, 6, tcp(40000, SERVER_PORT, 7, 9, PSH | ACK, b"get k\r\n"),
                        options=b"\x01\x01\x01\x00")
    slow = decode(1, ethernet(with_options), 0, 14 + len(with_options), ports)
    assert isinstance(slow, tuple) and slow[:7] == fast[:7]  # the same flow key whichever path decoded it
    assert decode(1, ethernet(ipv4(CLIENT4, SERVER4, 6, b"", fragment=0x2000)), 0, 34, ports) == FRAGMENT
    assert decode(1, b"\0" * 13, 0, 13, ports) == MALFORMED


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanoseconds", [False, True])
def test_pcap_byte_orders_and_precisions(tmp_path: Path, big_endian: bool, nanoseconds: bool) -> None:
    packets = conversation_packets(TcpConversation())
    step = 1 if nanoseconds else 1000
    frames = [Packet(T0 + index * step, frame(1, packet)) for index, packet in enumerate(packets)]
    path = write_pcap(tmp_path / "c.pcap", 1, frames, big_endian=big_endian, nanoseconds=nanoseconds)
    items = list(PcapFileSource(path, [SERVER_PORT]))
    stamps = [item.timestamp_ns for item in items]
    assert stamps == [T0, T0 + 3 * step, T0 + 4 * step, T0 + 5 * step, T0 + 7 * step]


@pytest.mark.parametrize("big_endian", [False, True])
def test_pcapng_several_interfaces_resolutions_and_simple_packets(tmp_path: Path, big_endian: bool) -> None:
    ipv4_conversation = conversation_packets(TcpConversation())
    ipv6_conversation = conversation_packets(TcpConversation(client=CLIENT6, server=SERVER6, client_port=40001))
    body = bytearray(pcapng_section(big_endian))
    body += pcapng_interface(1, big_endian=big_endian)  # microseconds (the default resolution)
    body += pcapng_interface(113, big_endian=big_endian, tsresol=9)  # nanoseconds
    body += pcapng_interface(101, big_endian=big_endian, tsresol=0x80 | 20, tsoffset=1)  # 2^-20 s, +1 s offset
    for index, packet in enumerate(ipv4_conversation):
        body += pcapng_packet(Packet(T0 + index * 1000, frame(1, packet), interface=0), big_endian=big_endian)
    for index, packet in enumerate(ipv6_conversation):
        body += pcapng_packet(Packet(T0 + 10_000 + index, frame(113, packet), interface=1), big_endian=big_endian,
                              ticks_per_second=1_000_000_000)
    raw_request = ipv4(CLIENT4, SERVER4, 6, tcp(40002, SERVER_PORT, 77, 1, PSH | ACK, b"version\r\n"))
    # the interface adds 1 s to every timestamp it carries
    body += pcapng_packet(Packet(T0 - 1_000_000_000, raw_request, interface=2), big_endian=big_endian,
                          ticks_per_second=2**20)
    body += pcapng_statistics(1, 5, big_endian=big_endian)
    path = tmp_path / "c.pcapng"
    path.write_bytes(bytes(body))

    source = PcapFileSource(path, [SERVER_PORT])
    items = list(source)
    data = streams(items)
    assert data == {
        (1, REQ): b"get foo\r\n", (1, RESP): b"VALUE foo 0 3\r\nbar\r\nEND\r\n",
        (2, REQ): b"get foo\r\n", (2, RESP): b"VALUE foo 0 3\r\nbar\r\nEND\r\n",
        (3, REQ): b"version\r\n",
    }
    chunk_times = {(item.conn, item.offset, item.direction): item.timestamp_ns for item in items
                   if isinstance(item, StreamChunk)}
    assert chunk_times[1, 0, REQ] == T0 + 3000
    assert chunk_times[2, 15, RESP] == T0 + 10_005
    # 2^-20 s ticks cannot hold every nanosecond: the decoded time is within one tick of the original
    assert abs(chunk_times[3, 0, REQ] - T0) <= 954
    assert source.health.dropped_events == 5
    assert source.health.packets == 19

    simple = bytearray(pcapng_section(big_endian) + pcapng_interface(1, big_endian=big_endian))
    for packet in ipv4_conversation:
        simple += pcapng_simple_packet(frame(1, packet), big_endian=big_endian)
    path.write_bytes(bytes(simple))
    assert streams(PcapFileSource(path, [SERVER_PORT])) == {
        (1, REQ): b"get foo\r\n", (1, RESP): b"VALUE foo 0 3\r\nbar\r\nEND\r\n"}


def test_pcapng_with_two_sections_of_different_byte_orders(tmp_path: Path) -> None:
    first = conversation_packets(TcpConversation())
    second = conversation_packets(TcpConversation(client_port=40001))
    body = pcapng_section(False) + pcapng_interface(1)
    body += b"".join(pcapng_packet(Packet(T0 + i, frame(1, p))) for i, p in enumerate(first))
    body += pcapng_section(True) + pcapng_interface(101, big_endian=True)
    body += b"".join(pcapng_packet(Packet(T0 + 100 + i, p), big_endian=True) for i, p in enumerate(second))
    path = tmp_path / "two.pcapng"
    path.write_bytes(body)
    data = streams(PcapFileSource(path, [SERVER_PORT]))
    assert data[1, REQ] == data[2, REQ] == b"get foo\r\n"
    assert data[1, RESP] == data[2, RESP] == b"VALUE foo 0 3\r\nbar\r\nEND\r\n"


def test_stop_ends_a_file_promptly_and_flushes_open_connections(tmp_path: Path) -> None:
    frames = []
    for port in range(40000, 40200):  # 200 connections, 9 packets each
        packets = conversation_packets(TcpConversation(client_port=port))
        frames += [frame(1, packet) for packet in packets]
    source = PcapFileSource(write_pcap(tmp_path / "c.pcap", 1, timed(frames)), [SERVER_PORT])
    items = []
    for item in source:
        items.append(item)
        if len(items) == 1:
            source.stop()
    assert source.health.packets < len(frames) // 2
    assert len(items) < 200
    opened_ids = {item.conn for item in items if isinstance(item, ConnectionOpened)}
    closed_ids = [item.conn for item in items if isinstance(item, ConnectionClosed)]
    assert sorted(closed_ids) == sorted(opened_ids)  # every connection seen is closed exactly once


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 113, 276, 0, 108, 101, 12, 14, 228, 229, 147]), st.binary(max_size=120),
       st.integers(0, 60))
def test_decode_never_raises_on_garbage(link: int, garbage: bytes, cut: int) -> None:
    valid = frame(link if link != 147 else 1, ipv4(CLIENT4, SERVER4, 6, tcp(40000, SERVER_PORT, 1, 1, ACK, b"x")))
    for packet in (garbage, valid[:cut] + garbage, valid[:cut]):
        result = decode(link, packet, 0, len(packet), frozenset({SERVER_PORT}))
        assert isinstance(result, int | tuple)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.booleans())
def test_garbage_after_a_valid_file_header_is_a_one_line_error_or_health(tmp_path_factory: pytest.TempPathFactory,
                                                                         garbage: bytes, pcapng: bool) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "f"
    header = pcapng_section() + pcapng_interface(1) if pcapng else write_pcap(path, 1, []).read_bytes()
    path.write_bytes(header + garbage)
    source = PcapFileSource(path, [SERVER_PORT])
    try:
        list(source)
    except MembenchError as error:
        assert "\n" not in str(error)
        assert str(error).startswith("corrupt pcap")
