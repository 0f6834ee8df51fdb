"""Reading a pcapng file block by block: sections, interfaces, statistics and the three kinds of packet block.

`PcapngReader.read_block` reads the block at a byte position and hands each packet to a callback as (link type,
start, end, timestamp); it is the specification the compiled walk (record/_core_capture.pxi) follows for packet
blocks, and what the compiled walk hands every other block to.
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, NamedTuple

from membench.capture.stream import CaptureHealth
from membench.profile.schema import INT64_MAX, INT64_MIN

SECTION_HEADER: Final = 0x0A0D0D0A
LITTLE_ENDIAN: Final = b"\x4d\x3c\x2b\x1a"  # the byte-order magic 0x1A2B3C4D as a section stores it
BIG_ENDIAN: Final = b"\x1a\x2b\x3c\x4d"
_INTERFACE_DESCRIPTION: Final = 1
_OBSOLETE_PACKET: Final = 2
_SIMPLE_PACKET: Final = 3
_INTERFACE_STATISTICS: Final = 5
_ENHANCED_PACKET: Final = 6
_OPTION_TSRESOL: Final = 9
_OPTION_TSOFFSET: Final = 14
_OPTION_IFDROP: Final = 5
MAX_RECORD: Final = 1 << 26  # no link layer has 64 MiB frames: a larger record length means a corrupt file

PacketHandler = Callable[[int, int, int, int], None]  # (link type, start, end, timestamp in ns)


class CorruptCapture(Exception):
    """A structure no capture writes; the message names it and its byte position."""


class Interface(NamedTuple):
    """A pcapng interface: link type, and how to turn its timestamp ticks into nanoseconds."""

    link: int
    snaplen: int
    ticks_multiplier: int
    ticks_divisor: int
    offset_ns: int


def interface(link: int, snaplen: int, ticks_per_second: int, offset_s: int) -> Interface:
    """Reduce 10^9 / ticks_per_second to a small fraction, so the common resolutions cost one multiplication."""
    common = math.gcd(1_000_000_000, ticks_per_second)
    return Interface(link, snaplen, 1_000_000_000 // common, ticks_per_second // common, offset_s * 1_000_000_000)


class PcapngReader:
    """The state a pcapng file carries from block to block: byte order, interfaces, drop counts."""

    def __init__(self, path: Path, mapped: mmap.mmap, health: CaptureHealth) -> None:
        self.path = path
        self.mapped = mapped
        self.health = health
        self.big_endian = False
        self.interfaces: list[Interface] = []
        self.timestamp_ns = 0  # of the latest timed packet: a simple packet block has none of its own
        self._interface_drops: dict[tuple[int, int], int] = {}
        self._section = 0

    def read_block(self, at: int, on_packet: PacketHandler) -> int | None:
        """Read the block at `at`; the position of the next one, or None where the file ends (cut short or not)."""
        size = len(self.mapped)
        if at + 12 > size:
            if at < size:
                self.health.extra["truncated_file"] = 1
            return None
        block_type, block_length = self._unpack("II", at)
        if block_type == SECTION_HEADER:  # the same bytes in either byte order: the section says which follows
            block_length = self._new_section(at)
        end = at + block_length
        if block_length & 3 or block_length < 12 or end > size:
            if block_length & 3 or block_length < 12 or block_length > MAX_RECORD:
                raise CorruptCapture(f"corrupt pcapng block at byte {at} of {self.path}")
            self.health.extra["truncated_file"] = 1
            return None
        if self._unpack("I", end - 4)[0] != block_length:
            raise CorruptCapture(f"corrupt pcapng block at byte {at} of {self.path}")
        if block_type in (_ENHANCED_PACKET, _OBSOLETE_PACKET):
            self._packet(at, end, block_type, on_packet)
        elif block_type == _SIMPLE_PACKET:
            self._simple_packet(at, block_length, on_packet)
        elif block_type == _INTERFACE_DESCRIPTION:
            self.interfaces.append(self._interface(at, end))
        elif block_type == _INTERFACE_STATISTICS:
            self._statistics(at, end)
        return end

    def _unpack(self, layout: str, at: int) -> tuple[int, ...]:
        return struct.unpack_from((">" if self.big_endian else "<") + layout, self.mapped, at)

    def _new_section(self, at: int) -> int:
        byte_order_magic = self.mapped[at + 8:at + 12]
        if byte_order_magic not in (LITTLE_ENDIAN, BIG_ENDIAN):
            raise CorruptCapture(f"corrupt pcapng section header at byte {at} of {self.path}")
        self.big_endian = byte_order_magic == BIG_ENDIAN
        self.interfaces = []
        self._section += 1
        return self._unpack("I", at + 4)[0]

    def _packet(self, at: int, end: int, block_type: int, on_packet: PacketHandler) -> None:
        if end - at < 32:
            raise CorruptCapture(f"corrupt pcapng packet block at byte {at} of {self.path}")
        interface_id, high, low, captured, _ = self._unpack("IIIII", at + 8)
        if block_type == _OBSOLETE_PACKET:  # a 16-bit interface id followed by a 16-bit drop count
            interface_id = interface_id >> 16 if self.big_endian else interface_id & 0xFFFF
        start = at + 28
        if interface_id >= len(self.interfaces) or start + captured > end - 4:
            raise CorruptCapture(f"corrupt pcapng packet block at byte {at} of {self.path}")
        link, _, multiplier, divisor, offset_ns = self.interfaces[interface_id]
        timestamp_ns = (high << 32 | low) * multiplier // divisor + offset_ns
        if not INT64_MIN <= timestamp_ns <= INT64_MAX:  # past 1678-2262: no clock wrote it
            raise CorruptCapture(f"corrupt pcapng packet block at byte {at} of {self.path}")
        self.timestamp_ns = timestamp_ns
        on_packet(link, start, start + captured, self.timestamp_ns)

    def _simple_packet(self, at: int, block_length: int, on_packet: PacketHandler) -> None:
        if not self.interfaces or block_length < 16:
            raise CorruptCapture(f"corrupt pcapng simple packet block at byte {at} of {self.path}")
        captured = min(self._unpack("I", at + 8)[0], block_length - 16)
        if self.interfaces[0].snaplen:
            captured = min(captured, self.interfaces[0].snaplen)
        # A simple packet block has no timestamp: it happened no earlier than the packet before it.
        on_packet(self.interfaces[0].link, at + 12, at + 12 + captured, self.timestamp_ns)

    def _interface(self, at: int, end: int) -> Interface:
        if end - at < 20:
            raise CorruptCapture(f"corrupt pcapng interface block at byte {at} of {self.path}")
        link, _, snaplen = self._unpack("HHI", at + 8)
        ticks_per_second = 1_000_000
        offset_s = 0
        for code, value in self._options(at + 16, end - 4):
            if code == _OPTION_TSRESOL and len(value) == 1:
                exponent = value[0] & 0x7F
                ticks_per_second = 2 ** exponent if value[0] & 0x80 else 10 ** exponent
            elif code == _OPTION_TSOFFSET and len(value) == 8:
                offset_s = struct.unpack((">" if self.big_endian else "<") + "q", value)[0]
        return interface(link, snaplen, ticks_per_second, offset_s)

    def _statistics(self, at: int, end: int) -> None:
        if end - at < 24:
            raise CorruptCapture(f"corrupt pcapng statistics block at byte {at} of {self.path}")
        interface_id = self._unpack("I", at + 8)[0]
        for code, value in self._options(at + 20, end - 4):
            if code == _OPTION_IFDROP and len(value) == 8:
                drops = struct.unpack((">" if self.big_endian else "<") + "Q", value)[0]
                self._interface_drops[self._section, interface_id] = drops
                self.health.dropped_events = sum(self._interface_drops.values())
                return

    def _options(self, at: int, end: int) -> Iterator[tuple[int, bytes]]:
        while at + 4 <= end:
            code, length = self._unpack("HH", at)
            if code == 0:
                return
            if at + 4 + length > end:
                raise CorruptCapture(f"corrupt pcapng option at byte {at} of {self.path}")
            yield code, self.mapped[at + 4:at + 4 + length]
            at += 4 + (length + 3) // 4 * 4
