"""Build packets, pcap and pcapng files byte by byte, so tests know exactly what a capture holds."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from membench.capture.stream import ConnectionClosed, ConnectionOpened, Direction, StreamChunk, StreamItem

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
CLIENT4, SERVER4 = "10.0.0.1", "10.0.0.2"
CLIENT6, SERVER6 = "fd00::1", "fd00::2"
SERVER_PORT = 11311


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"", options: bytes = b"") -> bytes:
    offset = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset << 4, flags, 65535, 0,
                       0) + options + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(src: str, dst: str, protocol: int, payload: bytes, options: bytes = b"", fragment: int = 0) -> bytes:
    header_length = 20 + len(options)
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | header_length // 4, 0, header_length + len(payload), 1, fragment, 64,
                         protocol, 0, ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + options
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + payload


def ipv6(src: str, dst: str, protocol: int, payload: bytes, extensions: Sequence[tuple[int, bytes]] = ()) -> bytes:
    """`extensions`: (header type, body) in order; each body is padded to its header's size rule."""
    chain = b""
    types = [header_type for header_type, _ in extensions] + [protocol]
    for index, (header_type, body) in enumerate(extensions):
        next_header = types[index + 1]
        if header_type == 44:  # fragment header: fixed 8 bytes
            chain += bytes([next_header, 0]) + body[:6].ljust(6, b"\0")
        else:
            size = (len(body) + 2 + 7) // 8 * 8
            chain += bytes([next_header, size // 8 - 1]) + body.ljust(size - 2, b"\0")
    first = types[0]
    return struct.pack("!IHBB16s16s", 6 << 28, len(chain) + len(payload), first, 64,
                       ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed) + chain + payload


def ip(src: str, dst: str, protocol: int, payload: bytes) -> bytes:
    if ":" in src:
        return ipv6(src, dst, protocol, payload)
    return ipv4(src, dst, protocol, payload)


def ethernet(packet: bytes, vlans: Sequence[int] = (), ethertype: int | None = None) -> bytes:
    if ethertype is None:
        ethertype = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    tags = b""
    for index, vlan in enumerate(vlans):
        tag_type = 0x88A8 if index == 0 and len(vlans) > 1 else 0x8100
        tags += struct.pack("!HH", tag_type, vlan)
    return b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + tags + struct.pack("!H", ethertype) + packet


def _ethertype(packet: bytes) -> int:
    return 0x86DD if packet[0] >> 4 == 6 else 0x0800


def frame(link: int, packet: bytes) -> bytes:
    """Wrap an IP packet in the link-layer header of `link` (a pcap LINKTYPE value)."""
    if link == 1:
        return ethernet(packet)
    if link == 113:
        return struct.pack("!HHH8sH", 0, 772, 6, b"\0" * 8, _ethertype(packet)) + packet
    if link == 276:
        return struct.pack("!HHIHBB8s", _ethertype(packet), 0, 1, 772, 0, 6, b"\0" * 8) + packet
    if link == 0:
        return struct.pack("<I", 2 if packet[0] >> 4 == 4 else 24) + packet
    if link == 108:
        return struct.pack("!I", 2 if packet[0] >> 4 == 4 else 24) + packet
    if link in (12, 14, 101, 228, 229):
        return packet
    raise ValueError(link)


@dataclass
class Packet:
    timestamp_ns: int
    data: bytes
    original_length: int | None = None  # on the wire, when the capture kept less (snaplen)
    interface: int = 0


def write_pcap(path: Path, link: int, packets: Iterable[Packet], *, big_endian: bool = False,
               nanoseconds: bool = False, snaplen: int = 262144) -> Path:
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = bytearray(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, link))
    for packet in packets:
        seconds, rest = divmod(packet.timestamp_ns, 1_000_000_000)
        fraction = rest if nanoseconds else rest // 1000
        original = packet.original_length if packet.original_length is not None else len(packet.data)
        out += struct.pack(order + "IIII", seconds, fraction, len(packet.data), original) + packet.data
    path.write_bytes(bytes(out))
    return path


def _block(order: str, block_type: int, body: bytes) -> bytes:
    body = body + b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(order + "II", block_type, length) + body + struct.pack(order + "I", length)


def _option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def pcapng_section(big_endian: bool = False) -> bytes:
    order = ">" if big_endian else "<"
    return _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def pcapng_interface(link: int, *, big_endian: bool = False, tsresol: int | None = None, tsoffset: int = 0,
                     snaplen: int = 0) -> bytes:
    order = ">" if big_endian else "<"
    options = b""
    if tsresol is not None:
        options += _option(order, 9, bytes([tsresol]))
    if tsoffset:
        options += _option(order, 14, struct.pack(order + "q", tsoffset))
    if options:
        options += _option(order, 0, b"")
    return _block(order, 1, struct.pack(order + "HHI", link, 0, snaplen) + options)


def pcapng_packet(packet: Packet, *, big_endian: bool = False, ticks_per_second: int = 1_000_000) -> bytes:
    order = ">" if big_endian else "<"
    ticks = packet.timestamp_ns * ticks_per_second // 1_000_000_000
    original = packet.original_length if packet.original_length is not None else len(packet.data)
    return _block(order, 6, struct.pack(order + "IIIII", packet.interface, ticks >> 32, ticks & 0xFFFFFFFF,
                                        len(packet.data), original) + packet.data)


def pcapng_simple_packet(data: bytes, *, big_endian: bool = False) -> bytes:
    order = ">" if big_endian else "<"
    return _block(order, 3, struct.pack(order + "I", len(data)) + data)


def pcapng_statistics(interface: int, drops: int, *, big_endian: bool = False) -> bytes:
    order = ">" if big_endian else "<"
    options = _option(order, 5, struct.pack(order + "Q", drops)) + _option(order, 0, b"")
    return _block(order, 5, struct.pack(order + "III", interface, 0, 0) + options)


@dataclass
class TcpConversation:
    """One TCP connection whose sequence numbers the builder tracks; methods return IP packets."""

    client: str = CLIENT4
    server: str = SERVER4
    client_port: int = 40000
    server_port: int = SERVER_PORT
    client_isn: int = 1000
    server_isn: int = 5000
    next_seq: dict[Direction, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.next_seq = {Direction.REQUEST: self.client_isn + 1, Direction.RESPONSE: self.server_isn + 1}

    def _packet(self, direction: Direction, seq: int, flags: int, payload: bytes) -> bytes:
        other = Direction.RESPONSE if direction is Direction.REQUEST else Direction.REQUEST
        if direction is Direction.REQUEST:
            segment = tcp(self.client_port, self.server_port, seq, self.next_seq[other], flags, payload)
            return ip(self.client, self.server, 6, segment)
        segment = tcp(self.server_port, self.client_port, seq, self.next_seq[other], flags, payload)
        return ip(self.server, self.client, 6, segment)

    def handshake(self) -> list[bytes]:
        return [
            ip(self.client, self.server, 6, tcp(self.client_port, self.server_port, self.client_isn, 0, SYN)),
            ip(self.server, self.client, 6, tcp(self.server_port, self.client_port, self.server_isn,
                                                self.client_isn + 1, SYN | ACK)),
            self._packet(Direction.REQUEST, self.next_seq[Direction.REQUEST], ACK, b""),
        ]

    def send(self, direction: Direction, payload: bytes, flags: int = PSH | ACK) -> bytes:
        """The next segment of `direction`, advancing its sequence number."""
        packet = self._packet(direction, self.next_seq[direction], flags, payload)
        self.next_seq[direction] += len(payload)
        return packet

    def at(self, direction: Direction, relative_offset: int, payload: bytes, flags: int = PSH | ACK) -> bytes:
        """A segment at a given stream offset, without advancing (retransmissions, out of order)."""
        isn = self.client_isn if direction is Direction.REQUEST else self.server_isn
        return self._packet(direction, isn + 1 + relative_offset, flags, payload)

    def fin(self, direction: Direction) -> bytes:
        packet = self._packet(direction, self.next_seq[direction], FIN | ACK, b"")
        self.next_seq[direction] += 1
        return packet

    def rst(self, direction: Direction) -> bytes:
        return self._packet(direction, self.next_seq[direction], RST | ACK, b"")


def streams(items: Iterable[StreamItem]) -> dict[tuple[int, Direction], bytes]:
    """Concatenate chunk bytes per (connection, direction), checking offsets follow on without gaps."""
    out: dict[tuple[int, Direction], bytearray] = {}
    ends: dict[tuple[int, Direction], int] = {}
    for item in items:
        if isinstance(item, StreamChunk):
            key = (item.conn, item.direction)
            assert item.offset == ends.get(key, 0), f"gap or overlap before offset {item.offset} of {key}"
            assert len(item.data) == item.length, f"short chunk at offset {item.offset} of {key}"
            out.setdefault(key, bytearray()).extend(item.data)
            ends[key] = item.offset + item.length
    return {key: bytes(value) for key, value in out.items()}


def chunks(items: Iterable[StreamItem]) -> list[StreamChunk]:
    return [item for item in items if isinstance(item, StreamChunk)]


def opened(items: Iterable[StreamItem]) -> list[ConnectionOpened]:
    return [item for item in items if isinstance(item, ConnectionOpened)]


def closed(items: Iterable[StreamItem]) -> list[ConnectionClosed]:
    return [item for item in items if isinstance(item, ConnectionClosed)]
