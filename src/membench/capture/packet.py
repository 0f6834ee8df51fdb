"""Sans-IO packet decoding: link layer -> IPv4/IPv6 -> TCP/UDP, straight from a capture buffer.

`decode()` reads headers in place (the only copy is the flow key) and answers either a `Decoded` tuple or one
of the int codes `IGNORED`, `MALFORMED`, `FRAGMENT`. It never raises on bad bytes: every bound is checked against
the captured length. A plain tuple rather than a NamedTuple keeps the per-packet cost of the pcap fast path low.
"""

from __future__ import annotations

import mmap
import struct
from enum import IntEnum
from typing import Final

from membench.capture.stream import Transport


class LinkType(IntEnum):
    """pcap LINKTYPE_* values membench decodes."""

    NULL = 0  # BSD loopback: 4-byte address family in the capturing host's byte order
    ETHERNET = 1
    RAW_BSD = 12  # DLT_RAW on most BSDs
    RAW_OPENBSD = 14  # DLT_RAW on OpenBSD
    RAW = 101
    LOOP = 108  # OpenBSD loopback: 4-byte address family in network byte order
    LINUX_SLL = 113
    IPV4 = 228
    IPV6 = 229
    LINUX_SLL2 = 276


SUPPORTED_LINK_TYPES: Final = frozenset(int(t) for t in LinkType)

IGNORED: Final = 0  # well formed but not TCP/UDP to or from a watched port
MALFORMED: Final = 1  # truncated headers, bad lengths, unknown link type or IP version
FRAGMENT: Final = 2  # an IP fragment: membench does not reassemble IP fragments

Buffer = bytes | mmap.mmap  # what holds the captured bytes (a file mapping, a copied packet): slices are bytes

# (transport, flow key, src port, dst port, seq, ack, tcp flags, payload start, captured payload end,
#  payload length on the wire); seq/ack/flags are 0 for UDP. The flow key is the source address, the destination
# address, then both ports as on the wire (12 bytes for IPv4, 36 for IPv6): one hashable object per packet, which
# for IPv4 without options is a single slice of the packet.
Decoded = tuple[Transport, bytes, int, int, int, int, int, int, int, int]

TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_ACK: Final = 0x10

_ETH_IPV4: Final = 0x0800
_ETH_IPV6: Final = 0x86DD
_ETH_VLAN_TAGS: Final = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
_MAX_VLAN_TAGS: Final = 8
_AF_INET: Final = 2
_AF_INET6: Final = frozenset({10, 23, 24, 28, 30})  # Linux, Windows/WinSock, NetBSD/OpenBSD, FreeBSD, macOS

_IPV6_EXTENSION_HEADERS: Final = frozenset({0, 43, 60, 135, 139, 140})  # hop-by-hop, routing, dst opts, mobility,...
_IPV6_FRAGMENT: Final = 44
_IPV6_AUTH: Final = 51
_IPV6_SKIPPABLE_HEADERS: Final = _IPV6_EXTENSION_HEADERS | {_IPV6_FRAGMENT, _IPV6_AUTH}
_PROTO_TCP: Final = 6
_PROTO_UDP: Final = 17
_TCP: Final = Transport.TCP

_IPV4_HEADER = struct.Struct("!BxHxxHxB")  # version/ihl, total length, flags/fragment offset, protocol
_TCP_HEADER = struct.Struct("!HHIIBB")  # ports, seq, ack, data offset, flags
_UDP_HEADER = struct.Struct("!HHH")  # ports, length
_ETHERNET_IPV4_TCP = struct.Struct("!12xHBxHxxHxB10xHHIIBB")  # the fields of the two above, from the frame start
_U16 = struct.Struct("!H")
_U32_LE = struct.Struct("<I")
_U32_BE = struct.Struct("!I")


def decode(link: int, buf: Buffer, start: int, end: int, ports: frozenset[int]) -> Decoded | int:
    """Decode the packet captured in `buf[start:end]` on a `link` link type, keeping only traffic on `ports`."""
    if link == 1:
        if end - start >= 54:
            # Fast path for the overwhelmingly common frame: untagged Ethernet, IPv4 without options, TCP. Literals
            # rather than the named constants: this runs for every packet of a file, and global lookups add up.
            (ethertype, version_ihl, total_length, fragment, protocol, sport, dport, seq, ack, data_offset,
             flags) = _ETHERNET_IPV4_TCP.unpack_from(buf, start)
            if (ethertype == 0x0800 and version_ihl == 0x45 and protocol == 6 and not fragment & 0x3FFF
                    and total_length >= 40 and data_offset >= 0x50):
                if sport not in ports and dport not in ports:
                    return IGNORED
                ip_end = start + 14 + total_length
                payload = start + 34 + (data_offset >> 4) * 4
                if payload <= ip_end and payload <= end:
                    return (_TCP, buf[start + 26:start + 38], sport, dport, seq, ack, flags, payload,
                            ip_end if ip_end < end else end, ip_end - payload)
        return _decode_ethertype(buf, start + 12, start + 14, end, ports)
    if link == 113:
        return _decode_ethertype(buf, start + 14, start + 16, end, ports)
    if link == 276:
        return _decode_ethertype(buf, start, start + 20, end, ports)
    if link in (101, 12, 14):
        return _decode_ip_by_version(buf, start, end, ports)
    if link == 0 or link == 108:
        return _decode_loopback(link, buf, start, end, ports)
    if link == 228:
        return _decode_ipv4(buf, start, end, ports) if start < end and buf[start] >> 4 == 4 else MALFORMED
    if link == 229:
        return _decode_ipv6(buf, start, end, ports) if start < end and buf[start] >> 4 == 6 else MALFORMED
    return MALFORMED


def _decode_ethertype(buf: Buffer, type_at: int, payload_at: int, end: int, ports: frozenset[int]) -> Decoded | int:
    """Decode the payload at `payload_at` by the EtherType at `type_at`, stepping over VLAN tags (802.1Q, QinQ),
    each a 2-byte tag control field and the next EtherType."""
    if type_at + 2 > end:
        return MALFORMED
    ethertype = buf[type_at] << 8 | buf[type_at + 1]
    for _ in range(_MAX_VLAN_TAGS):
        if ethertype not in _ETH_VLAN_TAGS:
            break
        if payload_at + 4 > end:
            return MALFORMED
        ethertype = buf[payload_at + 2] << 8 | buf[payload_at + 3]
        payload_at += 4
    if ethertype == _ETH_IPV4:
        return _decode_ipv4(buf, payload_at, end, ports)
    if ethertype == _ETH_IPV6:
        return _decode_ipv6(buf, payload_at, end, ports)
    return MALFORMED if ethertype in _ETH_VLAN_TAGS else IGNORED


def _decode_ip_by_version(buf: Buffer, start: int, end: int, ports: frozenset[int]) -> Decoded | int:
    if start >= end:
        return MALFORMED
    version = buf[start] >> 4
    if version == 4:
        return _decode_ipv4(buf, start, end, ports)
    if version == 6:
        return _decode_ipv6(buf, start, end, ports)
    return MALFORMED


def _decode_loopback(link: int, buf: Buffer, start: int, end: int, ports: frozenset[int]) -> Decoded | int:
    if start + 4 > end:
        return MALFORMED
    if link == 108:
        family = _U32_BE.unpack_from(buf, start)[0]
    else:
        # NULL stores the family in the byte order of the machine that captured: a small number either way.
        family = _U32_LE.unpack_from(buf, start)[0]
        if family > 0xFFFF:
            family = _U32_BE.unpack_from(buf, start)[0]
    if family == _AF_INET:
        return _decode_ipv4(buf, start + 4, end, ports)
    if family in _AF_INET6:
        return _decode_ipv6(buf, start + 4, end, ports)
    return IGNORED


def _decode_ipv4(buf: Buffer, ip: int, end: int, ports: frozenset[int]) -> Decoded | int:
    if ip + 20 > end:
        return MALFORMED
    version_ihl, total_length, fragment, protocol = _IPV4_HEADER.unpack_from(buf, ip)
    header_length = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or header_length < 20 or ip + header_length > end:
        return MALFORMED
    if fragment & 0x3FFF:  # more-fragments flag or a non-zero offset
        return FRAGMENT
    if total_length == 0:
        # A capture taken before TCP segmentation offload sees length 0: the captured bytes are the packet.
        ip_end = end
    elif total_length < header_length:
        return MALFORMED
    else:
        ip_end = ip + total_length
    return _decode_transport(buf, protocol, ip + header_length, ip_end, end,
                             buf[ip + 12:ip + 16], buf[ip + 16:ip + 20], ports)


def _decode_ipv6(buf: Buffer, ip: int, end: int, ports: frozenset[int]) -> Decoded | int:
    if ip + 40 > end:
        return MALFORMED
    if buf[ip] >> 4 != 6:
        return MALFORMED
    payload_length = _U16.unpack_from(buf, ip + 4)[0]
    # Length 0 is a jumbogram or a capture taken before segmentation offload: the captured bytes tell.
    ip_end = end if payload_length == 0 else ip + 40 + payload_length
    next_header = buf[ip + 6]
    at = ip + 40
    while next_header != _PROTO_TCP and next_header != _PROTO_UDP:
        if next_header not in _IPV6_SKIPPABLE_HEADERS:
            return IGNORED  # ESP, ICMPv6, no-next-header, ...
        if at + 8 > end:
            return MALFORMED
        if next_header == _IPV6_FRAGMENT:
            offset_and_more = _U16.unpack_from(buf, at + 2)[0]
            if offset_and_more & 0xFFF9:  # a non-zero offset, or more fragments follow
                return FRAGMENT
            length = 8  # an atomic fragment: the whole packet is here
        elif next_header == _IPV6_AUTH:
            length = (buf[at + 1] + 2) * 4
        else:
            length = (buf[at + 1] + 1) * 8
        next_header = buf[at]
        at += length
    if at > ip_end:
        return MALFORMED
    return _decode_transport(buf, next_header, at, ip_end, end, buf[ip + 8:ip + 24], buf[ip + 24:ip + 40], ports)


def _decode_transport(buf: Buffer, protocol: int, at: int, ip_end: int, end: int, src: bytes,
                      dst: bytes, ports: frozenset[int]) -> Decoded | int:
    if protocol == _PROTO_TCP:
        if at + 20 > end or at + 20 > ip_end:
            return MALFORMED
        sport, dport, seq, ack, data_offset, flags = _TCP_HEADER.unpack_from(buf, at)
        if sport not in ports and dport not in ports:
            return IGNORED
        payload = at + (data_offset >> 4) * 4
        if payload < at + 20 or payload > ip_end or payload > end:
            return MALFORMED
        return (Transport.TCP, src + dst + buf[at:at + 4], sport, dport, seq, ack, flags,
                payload, min(ip_end, end), ip_end - payload)
    if protocol == _PROTO_UDP:
        if at + 8 > end:
            return MALFORMED
        sport, dport, length = _UDP_HEADER.unpack_from(buf, at)
        if sport not in ports and dport not in ports:
            return IGNORED
        if length < 8 or at + length > ip_end:
            return MALFORMED
        udp_end = at + length
        return (Transport.UDP, src + dst + buf[at:at + 4], sport, dport, 0, 0, 0, at + 8,
                min(udp_end, end), length - 8)
    return IGNORED
