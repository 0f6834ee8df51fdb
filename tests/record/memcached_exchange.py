"""Send bytes to a real memcached on a raw socket and record the exchange through the parsers and the pairing."""

from __future__ import annotations

import itertools
import socket
import struct
from dataclasses import dataclass

from membench.profile.schema import Operation
from membench.protocol.events import Request, Response
from membench.protocol.stream import RequestStreamParser, ResponseStreamParser
from membench.record.anonymize import KeyHasher
from membench.record.pairing import ConnectionPairer, PairingStats
from tests.conftest import Memcached

HASHER = KeyHasher.from_passphrase("exchange")
BINARY_HEADER = struct.Struct(">BBHBBHIIQ")


@dataclass
class Exchange:
    replies: bytes
    operations: list[Operation]
    pairing: PairingStats

    def statuses(self) -> list[tuple[str, str]]:
        return [(op.command, op.status) for op in self.operations]


def read_until(sock: socket.socket, until: bytes) -> bytes:
    buf = b""
    while not buf.endswith(until):
        chunk = sock.recv(1 << 16)
        assert chunk, f"memcached closed the connection; got {buf!r}"
        buf += chunk
    return buf


def read_binary_replies(sock: socket.socket, count: int) -> bytes:
    buf = b""
    while _count_packets(buf) < count:
        chunk = sock.recv(1 << 16)
        assert chunk, "memcached closed the connection"
        buf += chunk
    return buf


def _count_packets(buf: bytes) -> int:
    count = end = 0
    while end + 24 <= len(buf):
        end += 24 + BINARY_HEADER.unpack_from(buf, end)[6]
        count += end <= len(buf)
    return count


def binary_request(opcode: int, key: bytes, extras: bytes = b"", value: bytes = b"", opaque: int = 0) -> bytes:
    body = len(extras) + len(key) + len(value)
    return BINARY_HEADER.pack(0x80, opcode, len(key), len(extras), 0, 0, body, opaque, 0) + extras + key + value


def record(requests: bytes, replies: bytes) -> Exchange:
    """What membench records from these two byte streams of one connection."""
    operations: list[Operation] = []
    stats = PairingStats()
    pairer = ConnectionPairer(0, HASHER, operations.append, stats, itertools.count(1).__next__)
    request_parser, response_parser = RequestStreamParser(), ResponseStreamParser()
    for event in request_parser.receive(requests, 1_000) + request_parser.close(1_000):
        if isinstance(event, Request):
            pairer.on_request(event)
    for event in response_parser.receive(replies, 2_000) + response_parser.close(2_000):
        if isinstance(event, Response):
            pairer.on_response(event)
    pairer.close()
    return Exchange(replies, operations, stats)


def exchange(memcached: Memcached, requests: bytes, until: bytes = b"MN\r\n") -> Exchange:
    """Send `requests` on a new connection, read memcached's replies up to `until`, and record both."""
    with socket.create_connection((memcached.host, memcached.port)) as sock:
        sock.sendall(requests)
        replies = read_until(sock, until)
    return record(requests, replies)
