"""The compiled packet path (pcap/pcapng walk, packet decode, TCP reassembly, UDP framing, straight into the compiled
pipeline) against the Python specification (PcapFileSource's items into the Python RecordPipeline): the same rows,
row for row, the same pipeline health and the same capture health, for generated captures of the three protocols
with lost, repeated, reordered and cut segments, handshakes or none, FIN and RST, IPv4 and IPv6, every link type,
both file formats and byte orders, malformed packets and UDP datagrams; and for every capture of the corpus."""

from __future__ import annotations

import random
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from membench.capture.pcap import PcapFileSource
from membench.capture.stream import CaptureHealth, ConnectionClosed, ConnectionOpened, Direction, StreamChunk
from membench.errors import MembenchError
from membench.extensions import DISABLED, compiled
from membench.record.anonymize import KeyHasher
from membench.record.pipeline import RecordPipeline
from tests.capture.capture_builders import (
    ACK,
    PSH,
    SERVER_PORT,
    Packet,
    TcpConversation,
    frame,
    ip,
    pcapng_interface,
    pcapng_packet,
    pcapng_section,
    pcapng_simple_packet,
    pcapng_statistics,
    udp,
    write_pcap,
)
from tests.record.traffic_strategies import conversations

CORE = compiled("membench.record._core")
pytestmark = pytest.mark.skipif(CORE is None, reason="MEMBENCH_NO_EXTENSIONS=1: only the specification runs"
                                if DISABLED else "the compiled twins were not built")
SALT = b"0123456789abcdef"
CORPUS = Path(__file__).parents[1] / "data" / "pcap"
LINKS = [1, 113, 276, 0, 108, 101, 228]


def specification(path: Path, port: int) -> tuple[Any, ...]:
    """Rows and health from the Python specification, and the error that ended the file, if any."""
    pipeline = RecordPipeline(KeyHasher(SALT))
    health = CaptureHealth()
    error = None
    try:
        source = PcapFileSource(path, (port,))
        health = source.health
        for item in source:
            if type(item) is StreamChunk:
                pipeline.chunk(*item)
            elif type(item) is ConnectionOpened:
                pipeline.open(item.conn, item.mid_stream)
            elif type(item) is ConnectionClosed:
                pipeline.close(item.conn, item.timestamp_ns)
    except MembenchError as failure:
        error = str(failure)
    pipeline.close_all(0)
    return pipeline.take_rows(), pipeline.health(), health.as_dict(), error


def twin(path: Path, port: int) -> tuple[Any, ...]:
    pipeline = CORE.RecordPipeline(SALT)
    health = CaptureHealth()
    error = None
    try:
        source = PcapFileSource(path, (port,))
        health = source.health
        source.feed(pipeline, threading.Lock())
    except MembenchError as failure:
        error = str(failure)
    pipeline.close_all(0)
    return pipeline.take_rows(), pipeline.health(), health.as_dict(), error


def segments(conversation: TcpConversation, direction: Direction, data: bytes, rng: random.Random,
             faults: bool) -> list[bytes]:
    """`data` as the segments of one direction; with `faults`, some are lost, repeated or cut short."""
    packets = []
    at = 0
    while at < len(data):
        size = rng.randint(1, 90)
        piece = data[at:at + size]
        fault = rng.choice(["none"] * 6 + ["lost", "repeated", "overlapping"]) if faults else "none"
        if fault != "lost":
            packets.append(conversation.at(direction, at, piece))
        if fault == "repeated":
            packets.append(conversation.at(direction, at, piece))
        elif fault == "overlapping" and at:
            back = rng.randint(1, at)
            packets.append(conversation.at(direction, at - back, data[at - back:at + len(piece)]))
        at += len(piece)
    conversation.next_seq[direction] += len(data)
    return packets


@st.composite
def connection_packets(draw: st.DrawFn, index: int) -> list[bytes]:
    requests, replies = draw(conversations)
    rng = random.Random(draw(st.integers(0, 2**32)))
    version6 = draw(st.booleans())
    conversation = TcpConversation(client="fd00::1" if version6 else "10.0.0.1",
                                   server="fd00::2" if version6 else "10.0.0.2", client_port=40000 + index,
                                   client_isn=draw(st.sampled_from([1000, 0xFFFFFF00])), server_isn=5000)
    packets = conversation.handshake() if draw(st.booleans()) else []
    faults = draw(st.booleans())
    for direction, data in ((Direction.REQUEST, requests), (Direction.RESPONSE, replies)):
        packets += segments(conversation, direction, data, rng, faults)
    ending = draw(st.sampled_from(["none", "fin", "rst"]))
    if ending == "fin":
        packets += [conversation.fin(Direction.REQUEST), conversation.fin(Direction.RESPONSE)]
    elif ending == "rst":
        packets.append(conversation.rst(Direction.RESPONSE))
    if faults:  # some segments arrive late
        for _ in range(draw(st.integers(0, 3))):
            if len(packets) > 2:
                moved = packets.pop(rng.randrange(len(packets)))
                packets.insert(rng.randrange(len(packets)), moved)
    return packets


@st.composite
def udp_packets(draw: st.DrawFn, index: int) -> list[bytes]:
    """One UDP flow: each message in datagrams of memcached's frame, some lost, repeated or reordered, and now
    and then a request id reused with another datagram count."""
    requests, replies = draw(conversations)
    rng = random.Random(draw(st.integers(0, 2**32)))
    client_port = 41000 + index
    packets = []
    for request_id, (direction, data) in enumerate(((0, requests), (1, replies), (0, requests[:40]))):
        pieces = [data[at:at + 60] for at in range(0, len(data), 60)] or [b""]
        count = len(pieces) + (1 if rng.random() < 0.1 else 0)
        for sequence, piece in enumerate(pieces):
            fault = rng.choice(["none"] * 5 + ["lost", "repeated"])
            frame = struct.pack("!HHHH", request_id, sequence, count, 0) + piece
            ports = (client_port, SERVER_PORT) if direction == 0 else (SERVER_PORT, client_port)
            hosts = ("10.0.0.1", "10.0.0.2") if direction == 0 else ("10.0.0.2", "10.0.0.1")
            packet = ip(*hosts, 17, udp(*ports, frame))
            if fault != "lost":
                packets.append(packet)
            if fault == "repeated":
                packets.insert(rng.randrange(len(packets) + 1), packet)
    return packets


@st.composite
def captures(draw: st.DrawFn) -> list[bytes]:
    """The IP packets of up to three connections, interleaved, with a UDP flow, and a stray malformed or UDP packet
    now and then."""
    per_connection = [draw(connection_packets(index)) for index in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()):
        per_connection.append(draw(udp_packets(len(per_connection))))
    rng = random.Random(draw(st.integers(0, 2**32)))
    merged: list[bytes] = []
    while any(per_connection):
        merged.append(rng.choice([queue for queue in per_connection if queue]).pop(0))
    for _ in range(draw(st.integers(0, 2))):
        stray = draw(st.sampled_from(["truncated", "udp", "udp_garbage"]))
        if stray == "truncated":
            packet = ip("10.0.0.1", "10.0.0.2", 6, b"\x9c\x40")
        elif stray == "udp":
            packet = ip("10.0.0.1", "10.0.0.2", 17, udp(40100, SERVER_PORT, b"\0\1\0\0\0\1\0\0get k\r\n"))
        else:
            packet = ip("10.0.0.1", "10.0.0.2", 17, udp(40100, SERVER_PORT, b"\0\1"))
        merged.insert(rng.randrange(len(merged) + 1), packet)
    return merged


def write_capture(path: Path, packets: list[bytes], layout: tuple[int, str, bool, int]) -> Path:
    link, form, big_endian, snaplen = layout
    frames = []
    for index, packet in enumerate(packets):
        data = frame(link, packet) if link != 228 or packet[0] >> 4 == 4 else packet
        kept = data[:snaplen] if snaplen else data
        frames.append(Packet(1_700_000_000_000_000_000 + index * 1_000, kept, original_length=len(data)))
    if form == "pcap":
        return write_pcap(path, link, frames, big_endian=big_endian, nanoseconds=not big_endian)
    body = pcapng_section(big_endian) + pcapng_interface(link, big_endian=big_endian, tsresol=9)
    for index, packet in enumerate(frames):
        body += (pcapng_simple_packet(packet.data, big_endian=big_endian) if index % 7 == 6
                 else pcapng_packet(packet, big_endian=big_endian, ticks_per_second=10**9))
        if index == len(frames) // 2:
            body += pcapng_statistics(0, index, big_endian=big_endian)
    path.write_bytes(body)
    return path


layouts = st.tuples(st.sampled_from(LINKS), st.sampled_from(["pcap", "pcapng"]), st.booleans(),
                    st.sampled_from([0, 0, 0, 60]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(captures(), layouts, st.sampled_from(["whole", "cut", "corrupt"]))
def test_packet_twin_gives_the_specifications_profile(tmp_path: Path, packets: list[bytes],
                                                      layout: tuple[int, str, bool, int], ending: str) -> None:
    path = write_capture(tmp_path / "capture", packets, layout)
    if ending == "cut":
        path.write_bytes(path.read_bytes()[:-5])
    elif ending == "corrupt":
        path.write_bytes(path.read_bytes() + b"\xff" * 32)
    expected = specification(path, SERVER_PORT)
    assert twin(path, SERVER_PORT) == expected


def test_generated_captures_hold_operations_and_faults(tmp_path: Path) -> None:
    """The generator is worth its examples: captures with rows, holes, retransmissions and reordering occur."""
    seen = CaptureHealth()
    rows = 0

    @settings(max_examples=60, deadline=None, database=None)
    @given(captures(), layouts)
    def collect(packets: list[bytes], layout: tuple[int, str, bool, int]) -> None:
        nonlocal rows
        result = twin(write_capture(tmp_path / "capture", packets, layout), SERVER_PORT)
        rows += len(result[0])
        for name in ("holes", "retransmitted_bytes", "out_of_order_segments", "malformed_packets"):
            setattr(seen, name, getattr(seen, name) + result[2][name])

    collect()
    assert rows and seen.holes and seen.retransmitted_bytes and seen.out_of_order_segments and seen.malformed_packets


@pytest.mark.parametrize("name", sorted(path.name for path in CORPUS.glob("*.pcap")))
def test_packet_twin_gives_the_specifications_profile_on_the_corpus(name: str) -> None:
    expected = specification(CORPUS / name, 11211)
    assert expected[0], "the capture holds operations"
    assert twin(CORPUS / name, 11211) == expected


def test_stopping_a_fed_capture_ends_it_between_batches(tmp_path: Path) -> None:
    conversation = TcpConversation()
    packets = conversation.handshake() + [conversation.send(Direction.REQUEST, b"get k\r\n", PSH | ACK)
                                          for _ in range(10_000)]
    path = write_capture(tmp_path / "capture", packets, (1, "pcap", False, 0))
    source = PcapFileSource(path, (SERVER_PORT,))
    source.stop()
    source.feed(CORE.RecordPipeline(SALT), threading.Lock())
    assert source.health.packets == 0
