"""`PcapFileSource`: pcap and pcapng files as a StreamSource (live interfaces are capture/interface.py).

Packets are decoded (capture.packet), kept if to or from the watched ports, and handed to TCP reassembly
(capture.tcp) or memcached UDP framing (capture.udp) through capture.demux; pcapng blocks are read by
capture.pcapng. Files are memory-mapped. Iterating is the specification; `feed` gives the whole walk to a compiled
record pipeline, which decodes, reassembles and parses packets itself and hands non-packet pcapng blocks back.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import struct
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Final, Protocol

from membench.capture.demux import Demultiplexer, check_ports
from membench.capture.pcapng import BIG_ENDIAN, LITTLE_ENDIAN, MAX_RECORD, CorruptCapture, Interface, PcapngReader
from membench.capture.stream import CaptureHealth, StreamItem
from membench.errors import MembenchError

_PCAP_MAGIC: Final = {  # first four bytes -> (byte order, nanoseconds per timestamp fraction unit)
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"
_MAX_RECORD: Final = MAX_RECORD
_YIELD_BATCH: Final = 64  # items gathered before yielding: a file has no latency to keep, only overhead
_FEED_BATCH: Final = 4096  # packets per call into the compiled walk: the flush thread waits at most that long
# What the compiled walk answers (record/_core_capture.pxi's WALK_*).
_WALK_MORE: Final = 0
_WALK_END: Final = 1
_WALK_TRUNCATED: Final = 2
_WALK_CORRUPT: Final = 3
_WALK_CORRUPT_PACKET: Final = 4
_WALK_BLOCK: Final = 5


class PacketFeed(Protocol):
    """The compiled pipeline's packet side (record/_core_capture.pxi): packets in, calls into its pipeline."""

    last_timestamp_ns: int

    def packet(self, link: int, buf: mmap.mmap, start: int, end: int, timestamp_ns: int) -> None: ...

    def walk_pcap(self, buf: mmap.mmap, at: int, big_endian: bool, fraction_ns: int, link: int,
                  limit: int) -> tuple[int, int]: ...

    def walk_pcapng(self, buf: mmap.mmap, at: int, big_endian: bool, interfaces: list[Interface],
                    limit: int) -> tuple[int, int]: ...

    def finish(self, timestamp_ns: int) -> None: ...


class PacketConsumer(Protocol):
    """A compiled record pipeline, which makes PacketFeeds of itself."""

    def packet_feed(self, ports: tuple[int, ...], health: CaptureHealth,
                    conn_ids: Iterator[int]) -> PacketFeed: ...


class PcapFileSource:
    """Reads a pcap (either byte order, micro- or nanosecond) or pcapng file.

    A file cut short in the middle of a packet (tcpdump killed) is normal: everything before the cut is yielded and
    `health.extra["truncated_file"]` is set to 1. A corrupt file raises MembenchError after yielding what preceded
    the corruption. Stopped before its end (a signal), it sets `health.extra["stopped_before_end"]`.
    """

    def __init__(self, path: Path, ports: Sequence[int]) -> None:
        self.path = Path(path)
        self.name = f"pcap:{self.path}"
        self.ports = check_ports(ports)
        self.live = False
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
        elif magic == _PCAPNG_MAGIC:
            if len(head) < 12:
                raise MembenchError(f"truncated pcapng header in {self.path}")
            if head[8:12] not in (LITTLE_ENDIAN, BIG_ENDIAN):
                raise MembenchError(f"corrupt pcapng section header in {self.path}")
            self._pcapng = True
        else:
            raise MembenchError(f"not a pcap or pcapng file: {self.path}")

    def stop(self) -> None:
        self._stopping = True

    def _stopped_before_end(self) -> None:
        """Asked to stop (a signal) with the file not read to its end: the profile is of its first part only."""
        self.health.extra["stopped_before_end"] = 1

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
            record_header = struct.Struct(byte_order + "IIII")
            size = len(mapped)
            at = 24
            packets = 0
            timestamp_ns = 0
            while not self._stopping:
                if at + 16 > size:
                    if at < size:
                        self.health.extra["truncated_file"] = 1
                    break
                seconds, fraction, captured, _ = record_header.unpack_from(mapped, at)
                start = at + 16
                if start + captured > size:
                    if captured > _MAX_RECORD:
                        yield from self._finish(demux, packets, timestamp_ns)
                        raise MembenchError(f"corrupt pcap record at byte {at} of {self.path}")
                    self.health.extra["truncated_file"] = 1
                    break
                at = start + captured
                packets += 1
                timestamp_ns = seconds * 1_000_000_000 + fraction * fraction_ns
                demux.packet(link, mapped, start, at, timestamp_ns)
                if len(demux.out) >= _YIELD_BATCH:
                    self.health.packets = packets
                    yield from demux.out
                    demux.out.clear()
            else:
                self._stopped_before_end()
            yield from self._finish(demux, packets, timestamp_ns)

    def _pcapng_packets(self, demux: Demultiplexer) -> Iterator[StreamItem]:
        packets = 0

        def on_packet(link: int, start: int, end: int, timestamp_ns: int) -> None:
            nonlocal packets
            packets += 1
            demux.packet(link, mapped, start, end, timestamp_ns)

        with self._mapped() as mapped:
            reader = PcapngReader(self.path, mapped, self.health)
            at: int | None = 0
            while at is not None and not self._stopping:
                try:
                    at = reader.read_block(at, on_packet)
                except CorruptCapture as corrupt:
                    yield from self._finish(demux, packets, reader.timestamp_ns)
                    raise MembenchError(str(corrupt)) from None
                if len(demux.out) >= _YIELD_BATCH:
                    self.health.packets = packets
                    yield from demux.out
                    demux.out.clear()
            if at is not None:
                self._stopped_before_end()
            yield from self._finish(demux, packets, reader.timestamp_ns)

    def _finish(self, demux: Demultiplexer, packets: int, timestamp_ns: int) -> Iterator[StreamItem]:
        self.health.packets = packets
        demux.finish(timestamp_ns)
        yield from demux.out
        demux.out.clear()

    def feed(self, pipeline: PacketConsumer, lock: AbstractContextManager[object]) -> None:
        """Walk the file straight into a compiled record pipeline (no Python object per packet), under `lock`: the
        same stream items as iterating, delivered as calls into the pipeline's own reassembly (see PacketFeed)."""
        packets = pipeline.packet_feed(self.ports, self.health, itertools.count(1))
        with self._mapped() as mapped:
            try:
                if self._pcapng:
                    self._feed_pcapng(packets, mapped, lock)
                else:
                    self._feed_pcap(packets, mapped, lock)
            except CorruptCapture as corrupt:
                with lock:
                    packets.finish(packets.last_timestamp_ns)
                raise MembenchError(str(corrupt)) from None
            with lock:
                packets.finish(packets.last_timestamp_ns)

    def _feed_pcap(self, packets: PacketFeed, mapped: mmap.mmap, lock: AbstractContextManager[object]) -> None:
        byte_order, fraction_ns = _PCAP_MAGIC[mapped[:4]]
        link = struct.unpack_from(byte_order + "I", mapped, 20)[0] & 0xFFFF
        at = 24
        status = _WALK_MORE
        while status == _WALK_MORE and not self._stopping:
            with lock:
                at, status = packets.walk_pcap(mapped, at, byte_order == ">", fraction_ns, link, _FEED_BATCH)
        if status == _WALK_MORE:
            self._stopped_before_end()
        elif status == _WALK_TRUNCATED:
            self.health.extra["truncated_file"] = 1
        elif status == _WALK_CORRUPT:
            raise CorruptCapture(f"corrupt pcap record at byte {at} of {self.path}")

    def _feed_pcapng(self, packets: PacketFeed, mapped: mmap.mmap, lock: AbstractContextManager[object]) -> None:
        reader = PcapngReader(self.path, mapped, self.health)
        at: int | None = 0
        while at is not None and not self._stopping:
            with lock:
                at, status = packets.walk_pcapng(mapped, at, reader.big_endian, reader.interfaces, _FEED_BATCH)
                if status == _WALK_BLOCK:  # a block that describes rather than carries packets: pcapng.py reads it
                    reader.timestamp_ns = packets.last_timestamp_ns
                    at = reader.read_block(at, lambda link, start, end, ts: packets.packet(link, mapped, start, end,
                                                                                          ts))
                elif status == _WALK_TRUNCATED:
                    self.health.extra["truncated_file"] = 1
                    at = None
                elif status == _WALK_END:
                    at = None
                elif status != _WALK_MORE:
                    raise CorruptCapture(f"corrupt pcapng {'block' if status == _WALK_CORRUPT else 'packet block'} "
                                         f"at byte {at} of {self.path}")
        if at is not None:
            self._stopped_before_end()
