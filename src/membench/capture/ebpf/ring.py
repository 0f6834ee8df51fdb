"""The records of the capture's ring buffer as stream items, sans-IO: bytes of the mapped ring in, items out.

The ring's data pages are mapped twice in a row, so a record that wraps around reads as one slice. Each record is
the kernel's 8-byte header (length with busy/discard bits) and an events.h event; the consumer position moves
over whole records and stops at the first one still being written. The compiled record pipeline decodes the same
records itself (`RecordPipeline.drain_ring` in record/_core.pyx); tests hold the two equal.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Generator
from dataclasses import dataclass

from membench.capture.ebpf import events
from membench.capture.ebpf.events import EventFlag, EventType
from membench.capture.stream import (
    ConnectionClosed,
    ConnectionOpened,
    Direction,
    Endpoint,
    StreamChunk,
    StreamItem,
    Transport,
)

BUSY = 1 << 31
DISCARD = 1 << 30
RECORD_HEADER = 8
# The kernel's record header (its page offset skipped) and the event fields the consumer uses, the others skipped
# as padding: one unpack per record, no int objects made for nothing.
_SKIPPED_FIELDS = {"reserved"}
RECORD = struct.Struct("<I4x" + "".join(f"{struct.calcsize('<' + code)}x" if name in _SKIPPED_FIELDS else code
                                        for name, code in events.EVENT_LAYOUT))
_DATA, _OPEN, _CLOSE = int(EventType.DATA), int(EventType.OPEN), int(EventType.CLOSE)
_MID_STREAM = int(EventFlag.MID_STREAM)
# (socket direction) -> stream direction from memcached's point of view, for each watched side.
SERVER_DIRECTIONS = (Direction.REQUEST, Direction.RESPONSE)
CLIENT_DIRECTIONS = (Direction.RESPONSE, Direction.REQUEST)


@dataclass(slots=True)
class Drained:
    """What one drain consumed, for the source's health counters."""

    consumer: int  # the new consumer position
    records: int = 0
    bytes_seen: int = 0
    truncated_events: int = 0
    truncated_bytes: int = 0
    connections: int = 0
    mid_stream_connections: int = 0


def decode_records(ring: bytes | memoryview, data_start: int, consumer: int, producer: int, mask: int,
                   server_side: bool, known: set[int], limit: int) -> Generator[StreamItem, None, Drained]:
    """Yield the items of up to `limit` committed records between the two positions; returns what was consumed.

    `known` holds the connections announced so far: data of any other one announces it first (its open event was
    dropped, or the capture joined it), and a close forgets it. Items are yielded as they are decoded, not
    gathered: a consumer that drops each item before the next leaves the cyclic GC nothing to scan.
    """
    drained = Drained(consumer)
    directions = SERVER_DIRECTIONS if server_side else CLIENT_DIRECTIONS
    base = data_start + RECORD_HEADER
    event_size = events.EVENT.size
    unpack_record = RECORD.unpack_from
    while consumer < producer and drained.records < limit:
        position = base + (consumer & mask)
        length, timestamp, conn, offset, moved, copied, kind, direction, flags = unpack_record(
            ring, position - RECORD_HEADER)
        if length & BUSY:
            break
        consumer += ((length & ~DISCARD) + RECORD_HEADER + 7) & ~7
        if length & DISCARD:
            continue
        drained.records += 1
        if kind == _DATA:
            if conn not in known:
                known.add(conn)
                drained.connections += 1
                drained.mid_stream_connections += 1
                yield ConnectionOpened(conn, None, None, Transport.TCP, timestamp, True)
            start = position + event_size
            yield StreamChunk(conn=conn, direction=directions[direction], offset=offset,
                              data=bytes(ring[start:start + copied]), length=moved, timestamp_ns=timestamp)
            drained.bytes_seen += copied
            if copied < moved:
                drained.truncated_events += 1
                drained.truncated_bytes += moved - copied
        elif kind == _OPEN:
            known.add(conn)
            mid_stream = bool(flags & _MID_STREAM)
            drained.connections += 1
            drained.mid_stream_connections += mid_stream
            yield _opened(ring, position + event_size, conn, timestamp, mid_stream, server_side)
        elif kind == _CLOSE and conn in known:
            known.discard(conn)
            yield ConnectionClosed(conn, timestamp)
    drained.consumer = consumer
    return drained


def _endpoint(family: int, address: bytes, port: int) -> Endpoint:
    if family == socket.AF_INET:
        return Endpoint(str(ipaddress.IPv4Address(address[:4])), port)
    ip = ipaddress.IPv6Address(address)
    return Endpoint(str(ip.ipv4_mapped or ip), port)


def _opened(ring: bytes | memoryview, at: int, conn: int, timestamp: int, mid_stream: bool,
            server_side: bool) -> ConnectionOpened:
    local_addr, remote_addr, local_port, remote_port, family, _ = events.OPEN_INFO.unpack_from(ring, at)
    local = _endpoint(family, local_addr, local_port)
    remote = _endpoint(family, remote_addr, remote_port)
    client, server = (remote, local) if server_side else (local, remote)
    return ConnectionOpened(conn, client, server, Transport.TCP, timestamp, mid_stream)
