"""What every libpcap-fed source shares: the ports check, and routing decoded packets to TCP reassembly or UDP
framing, with what could not be decoded counted in the health."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Final

from membench.capture.packet import FRAGMENT, MALFORMED, SUPPORTED_LINK_TYPES, Buffer, decode
from membench.capture.stream import CaptureHealth, StreamItem, Transport
from membench.capture.tcp import TcpReassembler
from membench.capture.udp import UdpReassembler
from membench.errors import MembenchError

_FRAGMENTS_KEY: Final = "ip_fragments_unsupported"


def check_ports(ports: Sequence[int]) -> tuple[int, ...]:
    checked = tuple(ports)
    if not checked:
        raise MembenchError("no memcached port given to capture")
    for port in checked:
        if not isinstance(port, int) or not 0 < port < 65536:
            raise MembenchError(f"invalid port {port!r}: ports are numbers from 1 to 65535")
    return checked


class Demultiplexer:
    """Routes decoded packets to TCP reassembly or UDP framing; what they emit collects in `out`."""

    def __init__(self, ports: tuple[int, ...], health: CaptureHealth) -> None:
        self.out: list[StreamItem] = []
        self.ports = frozenset(ports)
        self._health = health
        conn_ids = itertools.count(1)
        self.tcp = TcpReassembler(self.ports, health, self.out, conn_ids)
        self.udp = UdpReassembler(self.ports, health, self.out, conn_ids)
        self._reported_link_types: set[int] = set()

    def packet(self, link: int, buf: Buffer, start: int, end: int, timestamp_ns: int) -> None:
        decoded = decode(link, buf, start, end, self.ports)
        if isinstance(decoded, int):
            self.undecoded(link, decoded)
        elif decoded[0] is Transport.TCP:
            self.tcp.segment(timestamp_ns, decoded, buf)
        else:
            self.udp.datagram(timestamp_ns, decoded, buf)

    def undecoded(self, link: int, code: int) -> None:
        """Count a packet `decode()` answered with a code rather than a segment."""
        if code == MALFORMED:
            self._health.malformed_packets += 1
            if link not in SUPPORTED_LINK_TYPES and link not in self._reported_link_types:
                self._reported_link_types.add(link)
                self._health.extra[f"unsupported_link_type_{link}"] = 1
        elif code == FRAGMENT:
            self._health.extra[_FRAGMENTS_KEY] = self._health.extra.get(_FRAGMENTS_KEY, 0) + 1

    def finish(self, timestamp_ns: int) -> None:
        self.tcp.finish(timestamp_ns)
        self.udp.finish(timestamp_ns)
