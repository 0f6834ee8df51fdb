"""`PcapFileSource`: pcap and pcapng files as a StreamSource (live interfaces are capture/interface.py).

Packets are decoded (capture.packet), kept if to or from the watched ports, and handed to TCP reassembly
(capture.tcp) or memcached UDP framing (capture.udp) through capture.demux. Files are memory-mapped and walked
with precompiled structs, so the per-packet work is a few `unpack_from` calls and the slice that becomes the
chunk's bytes.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, NamedTuple

from membench.capture.demux import Demultiplexer, check_ports
from membench.capture.packet import decode
from membench.capture.stream import CaptureHealth, StreamItem, Transport
from membench.errors import MembenchError

_PCAP_MAGIC: Final = {  # first four bytes -> (byte order, nanoseconds per timestamp fraction unit)
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAPNG_SHB: Final = 0x0A0D0D0A
_PCAPNG_LITTLE_ENDIAN: Final = b"\x4d\x3c\x2b\x1a"  # the byte-order magic 0x1A2B3C4D as a section stores it
_PCAPNG_BIG_ENDIAN: Final = b"\x1a\x2b\x3c\x4d"
_PCAPNG_IDB: Final = 1
_PCAPNG_OPB: Final = 2
_PCAPNG_SPB: Final = 3
_PCAPNG_ISB: Final = 5
_PCAPNG_EPB: Final = 6
_IDB_OPTION_TSRESOL: Final = 9
_IDB_OPTION_TSOFFSET: Final = 14
_ISB_OPTION_IFDROP: Final = 5
_MAX_RECORD: Final = 1 << 26  # no link layer has 64 MiB frames: a larger record length means a corrupt file
_YIELD_BATCH: Final = 64  # items gathered before yielding: a file has no latency to keep, only overhead
_FRAGMENTS_KEY: Final = "ip_fragments_unsupported"


class _Interface(NamedTuple):
    """A pcapng interface: link type, and how to turn its timestamp ticks into nanoseconds."""

    link: int
    snaplen: int
    ticks_multiplier: int
    ticks_divisor: int
    offset_ns: int


def _interface(link: int, snaplen: int, ticks_per_second: int, offset_s: int) -> _Interface:
    """Reduce 10^9 / ticks_per_second to a small fraction, so the common resolutions cost one multiplication."""
    common = math.gcd(1_000_000_000, ticks_per_second)
    return _Interface(link, snaplen, 1_000_000_000 // common, ticks_per_second // common, offset_s * 1_000_000_000)


class PcapFileSource:
    """Reads a pcap (either byte order, micro- or nanosecond) or pcapng file.

    A file cut short in the middle of a packet (tcpdump killed) is normal: everything before the cut is yielded and
    `health.extra["truncated_file"]` is set to 1. A corrupt file raises MembenchError after yielding what preceded
    the corruption.
    """

    def __init__(self, path: Path, ports: Sequence[int]) -> None:
        self.path = Path(path)
        self.name = f"pcap:{self.path}"
        self.ports = check_ports(ports)
        self.health = CaptureHealth()
        self._stopping = False
        try:
            with self.path.open("rb") as file:
                head = file.read(24)
        except FileNotFoundError:
            raise MembenchError(f"capture file not found: {self.path}") from None
        except IsADirectoryError:
            raise MembenchError(f"capture file is a directory: {self.path}") from None
        except PermissionError:
            raise MembenchError(f"no permission to read capture file: {self.path}") from None
        except OSError as error:
            raise MembenchError(f"cannot read capture file {self.path}: {error.strerror}") from None
        magic = head[:4]
        if magic in _PCAP_MAGIC:
            if len(head) < 24:
                raise MembenchError(f"truncated pcap header in {self.path}")
            self._pcapng = False
        elif magic == b"\x0a\x0d\x0d\x0a":
            if len(head) < 12:
                raise MembenchError(f"truncated pcapng header in {self.path}")
            if head[8:12] not in (_PCAPNG_LITTLE_ENDIAN, _PCAPNG_BIG_ENDIAN):
                raise MembenchError(f"corrupt pcapng section header in {self.path}")
            self._pcapng = True
        else:
            raise MembenchError(f"not a pcap or pcapng file: {self.path}")

    def stop(self) -> None:
        self._stopping = True

    def __iter__(self) -> Iterator[StreamItem]:
        # The readers are the generators themselves (no wrapper generator): every item passes one frame less.
        demux = Demultiplexer(self.ports, self.health)
        return self._pcapng_packets(demux) if self._pcapng else self._pcap_packets(demux)

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[mmap.mmap]:
        try:
            with self.path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                mapped.madvise(mmap.MADV_SEQUENTIAL)
                yield mapped
        except OSError as error:
            raise MembenchError(f"cannot read capture file {self.path}: {error.strerror}") from None

    def _pcap_packets(self, demux: Demultiplexer) -> Iterator[StreamItem]:
        with self._mapped() as mapped:
            byte_order, fraction_ns = _PCAP_MAGIC[mapped[:4]]
            link = struct.unpack_from(byte_order + "I", mapped, 20)[0] & 0xFFFF
            unpack_record = struct.Struct(byte_order + "IIII").unpack_from
            ports = demux.ports
            undecoded = demux.undecoded
            tcp_segment = demux.tcp.segment
            udp_datagram = demux.udp.datagram
            tcp_transport = Transport.TCP
            tuple_type = tuple
            batch = _YIELD_BATCH
            out = demux.out
            health = self.health
            size = len(mapped)
            at = 24
            packets = 0
            timestamp_ns = 0
            while not self._stopping:
                if at + 16 > size:
                    if at < size:
                        health.extra["truncated_file"] = 1
                    break
                seconds, fraction, captured, _ = unpack_record(mapped, at)
                start = at + 16
                at = start + captured
                if at > size:
                    if captured > _MAX_RECORD:
                        yield from self._finish(demux, packets, timestamp_ns)
                        raise MembenchError(f"corrupt pcap record at byte {start - 16} of {self.path}")
                    health.extra["truncated_file"] = 1
                    break
                packets += 1
                timestamp_ns = seconds * 1_000_000_000 + fraction * fraction_ns
                # Demultiplexer.packet, inlined: this loop is the file ingest hot path.
                decoded = decode(link, mapped, start, at, ports)
                if decoded.__class__ is not tuple_type:
                    undecoded(link, decoded)
                elif decoded[0] is tcp_transport:
                    tcp_segment(timestamp_ns, decoded, mapped)
                else:
                    udp_datagram(timestamp_ns, decoded, mapped)
                if len(out) >= batch:
                    health.packets = packets
                    yield from out
                    out.clear()
            yield from self._finish(demux, packets, timestamp_ns)

    def _pcapng_packets(self, demux: Demultiplexer) -> Iterator[StreamItem]:
        with self._mapped() as mapped:
            handle = demux.packet
            ports = demux.ports
            undecoded = demux.undecoded
            tcp_segment = demux.tcp.segment
            udp_datagram = demux.udp.datagram
            tcp_transport = Transport.TCP
            tuple_type = tuple
            batch = _YIELD_BATCH
            out = demux.out
            health = self.health
            size = len(mapped)
            at = 0
            packets = 0
            timestamp_ns = 0
            byte_order = "<"
            block_header = struct.Struct("<II")
            trailer = struct.Struct("<I")
            enhanced = struct.Struct("<IIIII")
            interfaces: list[_Interface] = []
            interface_drops: dict[tuple[int, int], int] = {}
            section = 0
            while not self._stopping:
                if at + 12 > size:
                    if at < size:
                        health.extra["truncated_file"] = 1
                    break
                block_type, block_length = block_header.unpack_from(mapped, at)
                if block_type == _PCAPNG_SHB:  # the same bytes in either byte order: the section says which follows
                    byte_order_magic = mapped[at + 8:at + 12]
                    if byte_order_magic not in (_PCAPNG_LITTLE_ENDIAN, _PCAPNG_BIG_ENDIAN):
                        yield from self._finish(demux, packets, timestamp_ns)
                        raise MembenchError(f"corrupt pcapng section header at byte {at} of {self.path}")
                    byte_order = "<" if byte_order_magic == _PCAPNG_LITTLE_ENDIAN else ">"
                    block_header = struct.Struct(byte_order + "II")
                    trailer = struct.Struct(byte_order + "I")
                    enhanced = struct.Struct(byte_order + "IIIII")
                    block_length = trailer.unpack_from(mapped, at + 4)[0]
                    interfaces = []
                    section += 1
                end = at + block_length
                if block_length & 3 or block_length < 12 or end > size:
                    if block_length & 3 or block_length < 12 or block_length > _MAX_RECORD:
                        yield from self._finish(demux, packets, timestamp_ns)
                        raise MembenchError(f"corrupt pcapng block at byte {at} of {self.path}")
                    health.extra["truncated_file"] = 1
                    break
                if trailer.unpack_from(mapped, end - 4)[0] != block_length:
                    yield from self._finish(demux, packets, timestamp_ns)
                    raise MembenchError(f"corrupt pcapng block at byte {at} of {self.path}")
                if block_type in (_PCAPNG_EPB, _PCAPNG_OPB):
                    if block_length < 32:
                        yield from self._finish(demux, packets, timestamp_ns)
                        raise MembenchError(f"corrupt pcapng packet block at byte {at} of {self.path}")
                    interface_id, high, low, captured, _ = enhanced.unpack_from(mapped, at + 8)
                    if block_type == _PCAPNG_OPB:  # a 16-bit interface id followed by a 16-bit drop count
                        interface_id = interface_id & 0xFFFF if byte_order == "<" else interface_id >> 16
                    start = at + 28
                    if interface_id >= len(interfaces) or start + captured > end - 4:
                        yield from self._finish(demux, packets, timestamp_ns)
                        raise MembenchError(f"corrupt pcapng packet block at byte {at} of {self.path}")
                    link, _, multiplier, divisor, offset_ns = interfaces[interface_id]
                    timestamp_ns = (high << 32 | low) * multiplier // divisor + offset_ns
                    packets += 1
                    # Demultiplexer.packet, inlined as in the pcap loop.
                    decoded = decode(link, mapped, start, start + captured, ports)
                    if decoded.__class__ is not tuple_type:
                        undecoded(link, decoded)
                    elif decoded[0] is tcp_transport:
                        tcp_segment(timestamp_ns, decoded, mapped)
                    else:
                        udp_datagram(timestamp_ns, decoded, mapped)
                elif block_type == _PCAPNG_SPB:
                    if not interfaces or block_length < 16:
                        yield from self._finish(demux, packets, timestamp_ns)
                        raise MembenchError(f"corrupt pcapng simple packet block at byte {at} of {self.path}")
                    original = trailer.unpack_from(mapped, at + 8)[0]
                    captured = min(original, block_length - 16)
                    if interfaces[0].snaplen:
                        captured = min(captured, interfaces[0].snaplen)
                    packets += 1
                    # A simple packet block has no timestamp: it happened no earlier than the packet before it.
                    handle(interfaces[0].link, mapped, at + 12, at + 12 + captured, timestamp_ns)
                elif block_type == _PCAPNG_IDB:
                    interfaces.append(self._interface(mapped, at, end, byte_order))
                elif block_type == _PCAPNG_ISB:
                    drops = self._interface_drops(mapped, at, end, byte_order)
                    if drops is not None:
                        interface_drops[section, drops[0]] = drops[1]
                        health.dropped_events = sum(interface_drops.values())
                at = end
                if len(out) >= batch:
                    health.packets = packets
                    yield from out
                    out.clear()
            yield from self._finish(demux, packets, timestamp_ns)

    def _interface(self, mapped: mmap.mmap, at: int, end: int, byte_order: str) -> _Interface:
        if end - at < 20:
            raise MembenchError(f"corrupt pcapng interface block at byte {at} of {self.path}")
        link, _, snaplen = struct.unpack_from(byte_order + "HHI", mapped, at + 8)
        ticks_per_second = 1_000_000
        offset_s = 0
        for code, value in self._options(mapped, at + 16, end - 4, byte_order):
            if code == _IDB_OPTION_TSRESOL and len(value) == 1:
                exponent = value[0] & 0x7F
                ticks_per_second = 2 ** exponent if value[0] & 0x80 else 10 ** exponent
            elif code == _IDB_OPTION_TSOFFSET and len(value) == 8:
                offset_s = struct.unpack(byte_order + "q", value)[0]
        return _interface(link, snaplen, ticks_per_second, offset_s)

    def _interface_drops(self, mapped: mmap.mmap, at: int, end: int, byte_order: str) -> tuple[int, int] | None:
        if end - at < 24:
            raise MembenchError(f"corrupt pcapng statistics block at byte {at} of {self.path}")
        interface_id = struct.unpack_from(byte_order + "I", mapped, at + 8)[0]
        for code, value in self._options(mapped, at + 20, end - 4, byte_order):
            if code == _ISB_OPTION_IFDROP and len(value) == 8:
                return interface_id, struct.unpack(byte_order + "Q", value)[0]
        return None

    def _options(self, mapped: mmap.mmap, at: int, end: int, byte_order: str) -> Iterator[tuple[int, bytes]]:
        option_header = struct.Struct(byte_order + "HH")
        while at + 4 <= end:
            code, length = option_header.unpack_from(mapped, at)
            if code == 0:
                return
            if at + 4 + length > end:
                raise MembenchError(f"corrupt pcapng option at byte {at} of {self.path}")
            yield code, mapped[at + 4:at + 4 + length]
            at += 4 + (length + 3) // 4 * 4

    def _finish(self, demux: Demultiplexer, packets: int, timestamp_ns: int) -> Iterator[StreamItem]:
        self.health.packets = packets
        demux.finish(timestamp_ns)
        yield from demux.out
        demux.out.clear()
