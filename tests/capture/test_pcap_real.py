"""Real traffic: tcpdump on loopback records a real memcached talking to real clients; the client side knows every
byte it sent and received, and the reassembled streams must equal them exactly."""

from __future__ import annotations

import itertools
import socket
import struct
from pathlib import Path
from typing import Any

from pymemcache.client.base import Client

from membench.capture.pcap import PcapFileSource
from membench.capture.stream import Direction, StreamChunk, Transport
from tests.capture.capture_builders import chunks, closed, opened, streams
from tests.conftest import Memcached, Tcpdump

REQ, RESP = Direction.REQUEST, Direction.RESPONSE
ONE_MIB = 1 << 20


class RecordingSocket:
    """A real socket that keeps a copy of every byte sent and received through it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sent = bytearray()
        self.received = bytearray()
        self.local_port = sock.getsockname()[1]

    def connect(self, address: Any) -> None:
        self._sock.connect(address)
        self.local_port = self._sock.getsockname()[1]

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)
        self.sent += data

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        self.received += data
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class RecordingSocketModule:
    """Stands in for the `socket` module in pymemcache, handing out RecordingSockets."""

    def __init__(self) -> None:
        self.sockets: list[RecordingSocket] = []

    def socket(self, *args: Any) -> RecordingSocket:
        recording = RecordingSocket(socket.socket(*args))
        self.sockets.append(recording)
        return recording

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)


def exchange(sock: RecordingSocket, request: bytes, reply_end: bytes) -> bytes:
    sock.sendall(request)
    reply = bytearray()
    while not reply.endswith(reply_end):
        data = sock.recv(1 << 20)
        assert data, "memcached closed the connection"
        reply += data
    return bytes(reply)


def connect(server: Memcached) -> RecordingSocket:
    return RecordingSocket(socket.create_connection((server.host, server.port), timeout=10))


def big_value() -> bytes:
    return bytes(range(256)) * (ONE_MIB // 256)


def talk(sock: RecordingSocket) -> None:
    value = big_value()
    exchange(sock, b"set big 0 0 %d\r\n" % len(value) + value + b"\r\n", b"STORED\r\n")
    assert exchange(sock, b"get big\r\n", b"END\r\n").endswith(value + b"\r\nEND\r\n")
    exchange(sock, b"set a 0 0 1 noreply\r\nx\r\nget a missing\r\nincr n 1\r\n", b"NOT_FOUND\r\n")
    exchange(sock, b"mg a v\r\nmn\r\n", b"MN\r\n")


def test_reassembled_streams_equal_what_the_client_sent_and_received(tmp_path: Path, memcached: Memcached) -> None:
    path = tmp_path / "real.pcap"
    dump = Tcpdump(path, memcached.port)
    sock = connect(memcached)
    talk(sock)
    sock.close()
    assert dump.stop() == 0

    source = PcapFileSource(path, [memcached.port])
    items = list(source)
    [connection] = opened(items)
    assert connection.mid_stream is False
    assert connection.transport is Transport.TCP
    assert connection.client is not None and connection.client.port == sock.local_port
    assert streams(items) == {(1, REQ): bytes(sock.sent), (1, RESP): bytes(sock.received)}
    assert [c.conn for c in closed(items)] == [1]
    health = source.health
    assert health.bytes_seen == len(sock.sent) + len(sock.received)
    assert (health.holes, health.bytes_missing, health.malformed_packets) == (0, 0, 0)


def test_pymemcache_connections(tmp_path: Path, memcached: Memcached) -> None:
    path = tmp_path / "pymemcache.pcap"
    dump = Tcpdump(path, memcached.port)
    module = RecordingSocketModule()
    clients = [Client((memcached.host, memcached.port), socket_module=module) for _ in range(3)]
    for index, client in enumerate(clients):
        client.set(f"key{index}", b"v" * (index * 5000 + 1))
        assert client.get(f"key{index}") == b"v" * (index * 5000 + 1)
        client.get_many([f"key{n}" for n in range(3)])
        client.delete("nope")
    for client in clients:
        client.close()
    assert dump.stop() == 0

    items = list(PcapFileSource(path, [memcached.port]))
    conn_of_port = {item.client.port: item.conn for item in opened(items) if item.client is not None}
    assert len(conn_of_port) == len(module.sockets) == 3
    expected = {}
    for recording in module.sockets:
        expected[conn_of_port[recording.local_port], REQ] = bytes(recording.sent)
        expected[conn_of_port[recording.local_port], RESP] = bytes(recording.received)
    assert streams(items) == expected


def test_connection_opened_before_the_capture(tmp_path: Path, memcached: Memcached) -> None:
    sock = connect(memcached)
    exchange(sock, b"set early 0 0 5\r\nhello\r\n", b"STORED\r\n")
    sent_before, received_before = len(sock.sent), len(sock.received)
    path = tmp_path / "mid.pcap"
    dump = Tcpdump(path, memcached.port)
    exchange(sock, b"get early\r\n", b"END\r\n")
    exchange(sock, b"version\r\n", b"\r\n")
    sock.close()
    dump.stop()

    source = PcapFileSource(path, [memcached.port])
    items = list(source)
    [connection] = opened(items)
    assert connection.mid_stream is True
    assert source.health.mid_stream_connections == 1
    assert streams(items) == {(1, REQ): bytes(sock.sent[sent_before:]),
                              (1, RESP): bytes(sock.received[received_before:])}
    assert [chunk.offset for chunk in chunks(items) if chunk.direction is REQ] == [0, 11]


def pcap_records(path: Path) -> tuple[bytes, list[bytes]]:
    """The file header and each record (header and data) of a little-endian pcap, as written by tcpdump here."""
    content = path.read_bytes()
    records = []
    at = 24
    while at < len(content):
        captured = struct.unpack_from("<I", content, at + 8)[0]
        records.append(content[at:at + 16 + captured])
        at += 16 + captured
    return content[:24], records


def tcp_fields(record: bytes) -> tuple[int, int, int]:
    """(source port, sequence number, payload length) of an Ethernet/IPv4/TCP record."""
    ip_start = 16 + 14
    header_length = (record[ip_start] & 0x0F) * 4
    total_length = struct.unpack_from("!H", record, ip_start + 2)[0]
    tcp_start = ip_start + header_length
    sport, _, seq = struct.unpack_from("!HHI", record, tcp_start)
    data_offset = (record[tcp_start + 12] >> 4) * 4
    return sport, seq, total_length - header_length - data_offset


def test_capture_with_segments_removed_has_holes_exactly_where_they_were(tmp_path: Path,
                                                                         memcached: Memcached) -> None:
    path = tmp_path / "full.pcap"
    dump = Tcpdump(path, memcached.port)
    sock = connect(memcached)
    talk(sock)
    sock.close()
    assert dump.stop() == 0

    header, records = pcap_records(path)
    client_port = sock.local_port
    isn = {port: seq for port, seq, _ in map(tcp_fields, records[:2])}  # SYN, SYN-ACK
    data_records = [(index, *tcp_fields(record)) for index, record in enumerate(records)]
    data_records = [entry for entry in data_records if entry[3] > 0]
    # drop the 3rd request segment (inside the 1 MiB set) and the 2nd response segment (inside the 1 MiB get)
    request_drop = [entry for entry in data_records if entry[1] == client_port][2]
    response_drop = [entry for entry in data_records if entry[1] == memcached.port][1]
    dropped = {request_drop[0], response_drop[0]}
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(header + b"".join(record for index, record in enumerate(records) if index not in dropped))

    source = PcapFileSource(cut, [memcached.port])
    items = list(source)
    missing = {}
    for _, port, seq, length in (request_drop, response_drop):
        direction = REQ if port == client_port else RESP
        missing[direction] = ((seq - isn[port] - 1) & 0xFFFFFFFF, length)
    for direction, full in ((REQ, bytes(sock.sent)), (RESP, bytes(sock.received))):
        offset, length = missing[direction]
        parts = [chunk for chunk in chunks(items) if chunk.direction is direction]
        jumps = [(before.offset + before.length, after.offset) for before, after in itertools.pairwise(parts)
                 if before.offset + before.length != after.offset]
        assert jumps == [(offset, offset + length)]
        seen = b"".join(chunk.data for chunk in parts)
        assert seen == full[:offset] + full[offset + length:]
        assert all(isinstance(chunk, StreamChunk) and len(chunk.data) == chunk.length for chunk in parts)
    health = source.health
    assert health.holes == 2
    assert health.bytes_missing == request_drop[3] + response_drop[3]
    assert health.bytes_seen == len(sock.sent) + len(sock.received) - health.bytes_missing


def test_memcached_udp_multi_datagram_replies(tmp_path: Path, memcached_udp: Memcached) -> None:
    value = bytes(range(256)) * 40  # 10,240 bytes: memcached splits the reply over several datagrams
    setter = connect(memcached_udp)
    exchange(setter, b"set k 0 0 %d\r\n" % len(value) + value + b"\r\n", b"STORED\r\n")
    setter.close()
    path = tmp_path / "udp.pcap"
    dump = Tcpdump(path, memcached_udp.udp_port)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)
    client.connect((memcached_udp.host, memcached_udp.udp_port))
    requests = [struct.pack("!HHHH", request_id, 0, 1, 0) + b"get k\r\n" for request_id in (1, 2)]
    replies = []
    for request in requests:
        client.send(request)
        parts: dict[int, bytes] = {}
        total = None
        while total is None or len(parts) < total:
            datagram = client.recv(65536)
            _, sequence, total, _ = struct.unpack_from("!HHHH", datagram)
            parts[sequence] = datagram[8:]
        replies.append(b"".join(parts[n] for n in range(len(parts))))
    local_port = client.getsockname()[1]
    client.close()
    dump.stop()

    source = PcapFileSource(path, [memcached_udp.udp_port])
    items = list(source)
    [connection] = opened(items)
    assert connection.transport is Transport.UDP
    assert connection.client is not None and connection.client.port == local_port
    assert all(reply == b"VALUE k 0 10240\r\n" + value + b"\r\nEND\r\n" for reply in replies)
    assert streams(items) == {(1, REQ): b"get k\r\nget k\r\n", (1, RESP): b"".join(replies)}
    assert [chunk.offset for chunk in chunks(items) if chunk.direction is RESP] == [0, len(replies[0])]
    assert source.health.packets > 4  # each reply took several datagrams
    assert source.health.holes == 0
