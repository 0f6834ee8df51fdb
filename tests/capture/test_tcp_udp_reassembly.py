"""TCP reassembly and memcached UDP framing on hand-built captures, where every offset and count is known."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membench.capture.packet import decode
from membench.capture.pcap import PcapFileSource
from membench.capture.stream import (
    CaptureHealth,
    ConnectionClosed,
    ConnectionOpened,
    Direction,
    Endpoint,
    StreamChunk,
    StreamItem,
    Transport,
)
from membench.capture.tcp import TcpReassembler
from tests.capture.capture_builders import (
    ACK,
    CLIENT4,
    SERVER4,
    SERVER_PORT,
    Packet,
    TcpConversation,
    chunks,
    closed,
    ip,
    opened,
    streams,
    tcp,
    udp,
    write_pcap,
)

REQ, RESP = Direction.REQUEST, Direction.RESPONSE
T0 = 1_000_000_000_000
STEP = 1000


def capture(tmp_path: Path, packets: list[bytes], snaplen: int | None = None) -> tuple[list[StreamItem], CaptureHealth]:
    """Write raw-IP packets 1 µs apart, read them back with PcapFileSource."""
    frames = []
    for index, packet in enumerate(packets):
        kept = packet if snaplen is None else packet[:snaplen]
        frames.append(Packet(T0 + index * STEP, kept, original_length=len(packet)))
    source = PcapFileSource(write_pcap(tmp_path / "t.pcap", 101, frames), [SERVER_PORT])
    items = list(source)
    return items, source.health


def at(index: int) -> int:
    return T0 + index * STEP


def test_out_of_order_segment_waits_and_takes_the_fillers_time(tmp_path: Path) -> None:
    c = TcpConversation()
    packets = [*c.handshake(), c.at(REQ, 0, b"get a"), c.at(REQ, 10, b"c\r\n"), c.at(REQ, 5, b" b b ")]
    items, health = capture(tmp_path, packets)
    assert chunks(items) == [
        StreamChunk(1, REQ, 0, b"get a", 5, at(3)),
        StreamChunk(1, REQ, 5, b" b b ", 5, at(5)),
        StreamChunk(1, REQ, 10, b"c\r\n", 3, at(5)),  # arrived at 4, usable only once the gap filled at 5
    ]
    assert (health.out_of_order_segments, health.holes, health.retransmitted_bytes) == (1, 0, 0)


def test_retransmission_and_overlap_first_copy_wins(tmp_path: Path) -> None:
    c = TcpConversation()
    packets = [
        *c.handshake(),
        c.at(REQ, 0, b"0123456789"),
        c.at(REQ, 0, b"0123456789"),  # full retransmission
        c.at(REQ, 5, b"XXXXXabcde"),  # overlaps 5 bytes already seen: those stay as first seen
        c.at(REQ, 20, b"klmno"),  # ahead of a gap
        c.at(REQ, 18, b"YYpqr"),  # waits too; its last 3 bytes overlap the waiting "klm" and are dropped
        c.at(REQ, 15, b"fghij"),  # fills the gap; its last 2 bytes overlap the waiting "YY" and are dropped
    ]
    items, health = capture(tmp_path, packets)
    assert streams(items) == {(1, REQ): b"0123456789abcdefghYYklmno"}
    assert [(chunk.offset, chunk.length) for chunk in chunks(items)] == [(0, 10), (10, 5), (15, 3), (18, 2),
                                                                        (20, 5)]
    assert health.retransmitted_bytes == 10 + 5 + 3 + 2
    assert health.out_of_order_segments == 2
    assert (health.holes, health.bytes_missing) == (0, 0)


def test_sequence_wrap_around(tmp_path: Path) -> None:
    c = TcpConversation(client_isn=0xFFFFFFF0, server_isn=0xFFFFFFFE)
    packets = [*c.handshake(), c.send(REQ, b"a" * 10), c.at(REQ, 20, b"c" * 10), c.at(REQ, 10, b"b" * 10),
               c.send(RESP, b"x" * 5), c.send(RESP, b"y" * 5)]
    items, health = capture(tmp_path, packets)
    assert streams(items) == {(1, REQ): b"a" * 10 + b"b" * 10 + b"c" * 10, (1, RESP): b"xxxxxyyyyy"}
    assert [chunk.offset for chunk in chunks(items)] == [0, 10, 20, 0, 5]
    assert (health.holes, health.retransmitted_bytes, health.out_of_order_segments) == (0, 0, 1)


def test_missing_segment_acknowledged_by_the_peer_is_a_hole_at_once(tmp_path: Path) -> None:
    c = TcpConversation()
    first = c.send(REQ, b"get a\r\n")
    c.send(REQ, b"get bb\r\n")  # never captured
    third = c.send(REQ, b"get c\r\n")
    packets = [*c.handshake(), first, third, c.send(RESP, b"END\r\n")]  # the server's segment acknowledges all 22
    items, health = capture(tmp_path, packets)
    assert chunks(items) == [
        StreamChunk(1, REQ, 0, b"get a\r\n", 7, at(3)),
        StreamChunk(1, REQ, 15, b"get c\r\n", 7, at(4)),  # the offset jump from 7 to 15 is the hole
        StreamChunk(1, RESP, 0, b"END\r\n", 5, at(5)),
    ]
    assert (health.holes, health.bytes_missing) == (1, 8)


def test_unfilled_gap_is_given_up_at_the_end_of_the_capture(tmp_path: Path) -> None:
    c = TcpConversation()
    packets = [*c.handshake(), c.at(REQ, 0, b"abc"), c.at(REQ, 100, b"xyz")]
    items, health = capture(tmp_path, packets)
    assert chunks(items) == [StreamChunk(1, REQ, 0, b"abc", 3, at(3)), StreamChunk(1, REQ, 100, b"xyz", 3, at(4))]
    assert items[-1] == ConnectionClosed(1, at(4))
    assert (health.holes, health.bytes_missing) == (1, 97)


def test_missing_tail_before_fin_is_an_empty_chunk_with_a_length(tmp_path: Path) -> None:
    c = TcpConversation()
    packets = [*c.handshake(), c.send(REQ, b"get a\r\n")]
    c.send(REQ, b"quit\r\n")  # lost
    packets += [c.fin(REQ), c.fin(RESP)]
    items, health = capture(tmp_path, packets)
    assert chunks(items) == [StreamChunk(1, REQ, 0, b"get a\r\n", 7, at(3)), StreamChunk(1, REQ, 7, b"", 6, at(5))]
    assert closed(items) == [ConnectionClosed(1, at(5))]
    assert (health.holes, health.bytes_missing) == (1, 6)


def reassembler(**bounds: int) -> tuple[TcpReassembler, list[StreamItem], CaptureHealth]:
    health = CaptureHealth()
    out: list[StreamItem] = []
    return TcpReassembler(frozenset({SERVER_PORT}), health, out, itertools.count(1), **bounds), out, health


def feed(tcp_reassembler: TcpReassembler, packet: bytes, timestamp_ns: int) -> None:
    decoded = decode(101, packet, 0, len(packet), frozenset({SERVER_PORT}))
    assert isinstance(decoded, tuple)
    tcp_reassembler.segment(timestamp_ns, decoded, packet)


@pytest.mark.parametrize("bounds", [{"max_pending_segments": 2}, {"max_pending_bytes": 25},
                                    {"max_wait_ns": 5 * STEP}])
def test_waiting_is_bounded(bounds: dict[str, int]) -> None:
    r, out, health = reassembler(**bounds)
    c = TcpConversation()
    for index, packet in enumerate(c.handshake()):
        feed(r, packet, at(index))
    feed(r, c.at(REQ, 0, b"0123456789"), at(3))
    for index, offset in enumerate((20, 30, 40)):  # 10..20 never comes
        feed(r, c.at(REQ, offset, b"abcdefghij"), at(4 + index))
    if "max_wait_ns" in bounds:
        assert chunks(out) == [StreamChunk(1, REQ, 0, b"0123456789", 10, at(3))]  # 2 µs is within the wait
        feed(r, c.at(REQ, 50, b"abcdefghij"), at(10))  # 6 µs after the first waiting segment
    assert [(chunk.offset, chunk.timestamp_ns) for chunk in chunks(out)][:4] == [
        (0, at(3)), (20, at(4)), (30, at(5)), (40, at(6))]
    assert (health.holes, health.bytes_missing) == (1, 10)


def test_connection_open_before_the_capture_is_mid_stream(tmp_path: Path) -> None:
    c = TcpConversation(client_isn=123456, server_isn=654321)
    c.send(REQ, b"get early\r\n")  # before the capture started
    c.send(RESP, b"END\r\n")
    packets = [c.send(REQ, b"get late\r\n"), c.send(RESP, b"END\r\n"), c.fin(REQ), c.fin(RESP)]
    items, health = capture(tmp_path, packets)
    assert items == [
        ConnectionOpened(1, Endpoint(CLIENT4, 40000), Endpoint(SERVER4, SERVER_PORT), Transport.TCP, at(0), True),
        StreamChunk(1, REQ, 0, b"get late\r\n", 10, at(0)),
        StreamChunk(1, RESP, 0, b"END\r\n", 5, at(1)),
        ConnectionClosed(1, at(3)),
    ]
    assert (health.connections, health.mid_stream_connections) == (1, 1)


def test_capture_that_missed_the_syn_but_saw_the_syn_ack_is_complete(tmp_path: Path) -> None:
    c = TcpConversation()
    packets = [*c.handshake()[1:], c.send(REQ, b"version\r\n"), c.send(RESP, b"VERSION 1.6\r\n")]
    items, health = capture(tmp_path, packets)
    assert opened(items)[0].mid_stream is False
    assert [(chunk.direction, chunk.offset) for chunk in chunks(items)] == [(REQ, 0), (RESP, 0)]
    assert health.holes == 0


def test_reused_four_tuple_is_a_new_connection_and_retransmitted_syn_is_not(tmp_path: Path) -> None:
    first = TcpConversation(client_isn=100, server_isn=200)
    second = TcpConversation(client_isn=9000, server_isn=8000)
    handshake = first.handshake()
    packets = [handshake[0], *handshake, first.send(REQ, b"one\r\n"), first.fin(REQ), first.fin(RESP),
               first.send(REQ, b"", ACK), *second.handshake(), second.send(REQ, b"two\r\n")]
    items, health = capture(tmp_path, packets)
    assert [item.conn for item in opened(items)] == [1, 2]
    assert streams(items) == {(1, REQ): b"one\r\n", (2, REQ): b"two\r\n"}
    assert closed(items) == [ConnectionClosed(1, at(6)), ConnectionClosed(2, at(11))]
    assert health.connections == 2


def test_new_syn_on_an_open_tuple_closes_the_old_connection(tmp_path: Path) -> None:
    first = TcpConversation(client_isn=100, server_isn=200)
    second = TcpConversation(client_isn=9000, server_isn=8000)
    packets = [*first.handshake(), first.send(REQ, b"one\r\n"), *second.handshake()]
    items, _ = capture(tmp_path, packets)
    assert [type(item).__name__ for item in items] == ["ConnectionOpened", "StreamChunk", "ConnectionClosed",
                                                       "ConnectionOpened", "ConnectionClosed"]
    assert items[2] == ConnectionClosed(1, at(4))


def test_rst_closes_once_and_later_packets_of_the_tuple_are_ignored(tmp_path: Path) -> None:
    c = TcpConversation()
    packets = [*c.handshake(), c.send(REQ, b"get a\r\n"), c.rst(RESP), c.send(REQ, b"get b\r\n"), c.rst(REQ)]
    items, health = capture(tmp_path, packets)
    assert streams(items) == {(1, REQ): b"get a\r\n"}
    assert closed(items) == [ConnectionClosed(1, at(4))]
    assert health.retransmitted_bytes == 7  # data on a reset connection is not part of any stream


def test_keepalive_probe_is_not_data(tmp_path: Path) -> None:
    c = TcpConversation()
    packets = [*c.handshake(), c.send(REQ, b"get a\r\n"), c.at(REQ, 6, b"\0", ACK), c.send(REQ, b"get b\r\n")]
    items, health = capture(tmp_path, packets)
    assert streams(items) == {(1, REQ): b"get a\r\nget b\r\n"}
    assert health.retransmitted_bytes == 1


def test_snaplen_cut_payload_is_a_short_chunk(tmp_path: Path) -> None:
    c = TcpConversation()
    packets = [*c.handshake(), c.send(REQ, b"set k 0 0 100\r\n" + b"v" * 100 + b"\r\n"), c.send(REQ, b"get k\r\n")]
    items, health = capture(tmp_path, packets, snaplen=40 + 30)  # IPv4 + TCP headers, then 30 payload bytes
    assert [(chunk.offset, len(chunk.data), chunk.length) for chunk in chunks(items)] == [(0, 30, 117), (117, 7, 7)]
    assert (health.holes, health.bytes_missing, health.bytes_seen) == (1, 87, 37)


def test_pure_acks_and_fins_of_unknown_connections_open_nothing(tmp_path: Path) -> None:
    c = TcpConversation()
    items, health = capture(tmp_path, [c.send(REQ, b"", ACK), c.fin(RESP)])
    assert items == []
    assert health.connections == 0


def frame_header(request_id: int, sequence: int, count: int, reserved: int = 0) -> bytes:
    return struct.pack("!HHHH", request_id, sequence, count, reserved)


def datagram(payload: bytes, *, to_server: bool) -> bytes:
    if to_server:
        return ip(CLIENT4, SERVER4, 17, udp(50000, SERVER_PORT, payload))
    return ip(SERVER4, CLIENT4, 17, udp(SERVER_PORT, 50000, payload))


def test_udp_messages_reassemble_across_datagrams_in_any_order(tmp_path: Path) -> None:
    value = bytes(range(256)) * 10
    reply = b"VALUE k 0 2560\r\n" + value + b"\r\nEND\r\n"
    parts = [reply[:1000], reply[1000:2000], reply[2000:]]
    packets = [
        datagram(frame_header(7, 0, 1, 0xBEEF) + b"get k\r\n", to_server=True),  # junk in the reserved field
        datagram(frame_header(7, 1, 3) + parts[1], to_server=False),
        datagram(frame_header(7, 0, 3) + parts[0], to_server=False),
        datagram(frame_header(7, 1, 3) + parts[1], to_server=False),  # duplicate
        datagram(frame_header(7, 2, 3) + parts[2], to_server=False),
        datagram(frame_header(8, 0, 1) + b"get k\r\n", to_server=True),
    ]
    items, health = capture(tmp_path, packets)
    assert items == [
        ConnectionOpened(1, Endpoint(CLIENT4, 50000), Endpoint(SERVER4, SERVER_PORT), Transport.UDP, at(0), False),
        StreamChunk(1, REQ, 0, b"get k\r\n", 7, at(0)),
        StreamChunk(1, RESP, 0, reply, len(reply), at(4)),
        StreamChunk(1, REQ, 7, b"get k\r\n", 7, at(5)),
        ConnectionClosed(1, at(5)),
    ]
    assert health.retransmitted_bytes == 1000
    assert health.holes == 0


def test_udp_missing_datagram_is_a_hole_of_estimated_size(tmp_path: Path) -> None:
    packets = [
        datagram(frame_header(1, 0, 3) + b"a" * 1000, to_server=False),
        datagram(frame_header(1, 2, 3) + b"c" * 10, to_server=False),
        datagram(frame_header(2, 0, 1) + b"END\r\n", to_server=False),
    ]
    items, health = capture(tmp_path, packets)
    assert chunks(items) == [
        StreamChunk(1, RESP, 0, b"END\r\n", 5, at(2)),
        StreamChunk(1, RESP, 5, b"a" * 1000, 1000, at(1)),
        StreamChunk(1, RESP, 1005, b"", 1000, at(1)),  # the missing middle datagram, as large as the largest seen
        StreamChunk(1, RESP, 2005, b"c" * 10, 10, at(1)),
    ]
    assert (health.holes, health.bytes_missing) == (1, 1000)


def test_malformed_udp_frames_are_counted(tmp_path: Path) -> None:
    packets = [datagram(b"\0\1\0", to_server=True), datagram(frame_header(1, 3, 2), to_server=True),
               datagram(frame_header(1, 0, 0), to_server=True), datagram(frame_header(1, 0, 1) + b"mn\r\n",
                                                                          to_server=True)]
    items, health = capture(tmp_path, packets)
    assert streams(items) == {(1, REQ): b"mn\r\n"}
    assert health.malformed_packets == 3


def test_both_transports_share_one_connection_id_space(tmp_path: Path) -> None:
    c = TcpConversation()
    packets = [datagram(frame_header(1, 0, 1) + b"mn\r\n", to_server=True), *c.handshake(),
               c.send(REQ, b"mn\r\n"), c.rst(REQ)]
    items, _ = capture(tmp_path, packets)
    assert [(item.conn, item.transport) for item in opened(items)] == [(1, Transport.UDP), (2, Transport.TCP)]
    assert {item.conn for item in closed(items)} == {1, 2}
    assert [chunk.timestamp_ns for chunk in chunks(items)] == [at(0), at(4)]


@st.composite
def shuffled_segments(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]], set[int]]:
    """A byte stream, the (start, end) ranges of the segments that carry it in capture order (reordered, some sent
    twice, some overlapping), and the indexes of original segments the capture lost entirely."""
    data = draw(st.binary(min_size=1, max_size=400))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=20)))) if len(data) > 1 else []
    bounds = list(zip([0, *cuts], [*cuts, len(data)], strict=True))
    order = draw(st.permutations(range(len(bounds))))
    lost = set(draw(st.lists(st.sampled_from(range(len(bounds))), max_size=3)))
    sent = [bounds[index] for index in order if index not in lost]
    for _ in range(draw(st.integers(0, 4))):  # retransmissions of a seen range, possibly widened by a few bytes
        start, end = draw(st.sampled_from(sent)) if sent else (0, 0)
        if end > start:
            sent.insert(draw(st.integers(0, len(sent))), (start, min(len(data), end + draw(st.integers(0, 5)))))
    lost_bytes = set().union(*(range(*bounds[index]) for index in lost)) if lost else set()
    return data, sent, {offset for offset in lost_bytes if not any(s <= offset < e for s, e in sent)}


@settings(max_examples=150, deadline=None)
@given(shuffled_segments(), st.integers(0, 0xFFFFFFFF))
def test_reassembly_recovers_every_seen_byte_at_its_offset(case: tuple[bytes, list[tuple[int, int]], set[int]],
                                                           isn: int) -> None:
    data, sent, missing = case
    r, out, health = reassembler()
    c = TcpConversation(client_isn=isn)
    for index, packet in enumerate(c.handshake()):
        feed(r, packet, at(index))
    for index, (start, end) in enumerate(sent):
        feed(r, c.at(REQ, start, data[start:end]), at(3 + index))
    c.next_seq[REQ] = isn + 1 + len(data)
    feed(r, c.fin(REQ), at(3 + len(sent)))
    r.finish(at(4 + len(sent)))

    covered = 0
    position = 0
    for chunk in chunks(out):
        assert chunk.offset >= position  # never backwards, never overlapping
        assert chunk.data == data[chunk.offset:chunk.offset + len(chunk.data)]
        covered += len(chunk.data)
        position = chunk.offset + chunk.length
    assert position == len(data)
    assert covered == health.bytes_seen == len(data) - len(missing)
    assert health.bytes_missing == len(missing)
    assert (health.holes == 0) == (not missing)


@pytest.mark.parametrize(("acknowledged", "holes"), [(15, 0), (20, 1)])
def test_an_acknowledgment_inside_the_gap_keeps_waiting(tmp_path: Path, acknowledged: int, holes: int) -> None:
    """Only an acknowledgment of the whole gap proves it lost; part of it may still be retransmitted."""
    c = TcpConversation()
    server_ack = ip(SERVER4, CLIENT4, 6, tcp(SERVER_PORT, 40000, c.server_isn + 1, c.client_isn + 1 + acknowledged,
                                              ACK))
    packets = [*c.handshake(), c.at(REQ, 0, b"0123456789"), c.at(REQ, 20, b"klmnopqrst"), server_ack,
               c.at(REQ, 10, b"abcdefghij")]
    items, health = capture(tmp_path, packets)
    assert [(chunk.offset, chunk.length) for chunk in chunks(items)] == (
        [(0, 10), (10, 10), (20, 10)] if holes == 0 else [(0, 10), (20, 10)])
    assert health.holes == holes
    assert health.retransmitted_bytes == (10 if holes else 0)  # the late filler of a given-up gap is old news


def test_udp_datagram_cut_by_the_snap_length_keeps_its_bytes_in_place(tmp_path: Path) -> None:
    first = datagram(frame_header(3, 0, 2) + b"a" * 100, to_server=False)
    second = datagram(frame_header(3, 1, 2) + b"b" * 10, to_server=False)
    frames = [Packet(at(0), first[:20 + 8 + 8 + 40], original_length=len(first)), Packet(at(1), second)]
    source = PcapFileSource(write_pcap(tmp_path / "t.pcap", 101, frames), [SERVER_PORT])
    assert chunks(source) == [StreamChunk(1, RESP, 0, b"a" * 40, 100, at(1)),
                              StreamChunk(1, RESP, 100, b"b" * 10, 10, at(1))]
    assert (source.health.holes, source.health.bytes_missing) == (1, 60)
