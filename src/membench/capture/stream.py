"""What every capture source produces: per-connection, per-direction byte chunks with holes made visible.

A source (pcap file, live interface, eBPF) yields a sequence of `ConnectionOpened`, `StreamChunk` and
`ConnectionClosed` items in timestamp order per connection. Stream offsets count bytes from the first byte the
source saw in that direction, so a jump in offset, or a chunk whose `data` is shorter than its `length`, is a
*hole*: bytes that existed on the wire or socket but were never seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple, Protocol


class Direction(IntEnum):
    """Which way bytes flow, from memcached's point of view."""

    REQUEST = 0  # client -> server
    RESPONSE = 1  # server -> client


class Transport(IntEnum):
    TCP = 6
    UDP = 17


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str  # textual IPv4 or IPv6 address
    port: int


class ConnectionOpened(NamedTuple):
    """A connection became known: at its handshake, or mid-stream when the capture started after it."""

    conn: int  # source-assigned id, unique for the whole capture (a reused fd or 4-tuple gets a new id)
    client: Endpoint | None  # None when the source cannot know it (e.g. eBPF sees only one side's fd)
    server: Endpoint | None
    transport: Transport
    timestamp_ns: int
    mid_stream: bool  # True if the capture joined an established connection


class StreamChunk(NamedTuple):
    """Bytes at `offset` of one direction of a connection. `len(data) < length` means the tail was not seen."""

    conn: int
    direction: Direction
    offset: int
    data: bytes
    length: int
    timestamp_ns: int


class ConnectionClosed(NamedTuple):
    conn: int
    timestamp_ns: int


StreamItem = ConnectionOpened | StreamChunk | ConnectionClosed


@dataclass(slots=True)
class CaptureHealth:
    """What a source saw and what it lost. Every source fills the counters it can know; the rest stay zero."""

    packets: int = 0  # packets read (pcap) or events delivered (eBPF)
    bytes_seen: int = 0  # payload bytes delivered to the parser
    bytes_missing: int = 0  # payload bytes known to exist but not seen (holes)
    holes: int = 0
    dropped_events: int = 0  # events the kernel or libpcap could not deliver
    retransmitted_bytes: int = 0
    out_of_order_segments: int = 0
    malformed_packets: int = 0  # truncated headers, bad lengths, unknown link types
    connections: int = 0
    mid_stream_connections: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        counters = {name: getattr(self, name) for name in self.__slots__ if name != "extra"}
        counters.update(self.extra)
        return counters


class StreamSource(Protocol):
    """A capture source. Iterating yields stream items until the source ends or `stop()` is called."""

    name: str  # e.g. "pcap:/path/file.pcap", "interface:lo", "ebpf:any"
    ports: tuple[int, ...]
    # Traffic seen as it happens: what a crash leaves unwritten is gone. A file's can be read again, so its
    # profile is written in large final parts instead of one-second ones.
    live: bool
    health: CaptureHealth

    def __iter__(self) -> Iterator[StreamItem]: ...

    def stop(self) -> None:
        """Ask the source to finish: iteration ends soon after, flushing what it holds (safe from a signal)."""
        ...
