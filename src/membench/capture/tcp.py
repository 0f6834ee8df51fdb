"""TCP reassembly: decoded segments in, per-connection and per-direction byte chunks out, with holes made visible.

Sequence numbers are mapped onto stream offsets (bytes since the first byte seen in that direction) with signed
32-bit differences, so wrap-around and streams longer than 4 GiB need no special case. In-order data is emitted as
it arrives; data ahead of a gap waits in a small per-direction buffer until the gap is filled (retransmission), or
until waiting is pointless: the peer acknowledged bytes the capture never saw, the buffer exceeds its bounds, the
connection ends, or the capture ends. Then the gap becomes a hole (an offset jump, or an empty chunk with a length
at the end of a direction) and is counted in the health.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Iterator
from typing import Final

from membench.capture.packet import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Buffer, Decoded
from membench.capture.stream import (
    CaptureHealth,
    ConnectionClosed,
    ConnectionOpened,
    Direction,
    Endpoint,
    StreamChunk,
    StreamItem,
    Transport,
)

_SEQ_MASK: Final = 0xFFFFFFFF
_SEQ_HALF: Final = 0x80000000
_CLOSED_FLOW_MEMORY_NS: Final = 120 * 1_000_000_000  # like TIME_WAIT: late packets of a closed flow are not new ones

# NamedTuple.__new__ is a Python-level function; building the tuple directly halves the cost of the hot path.
_new_tuple = tuple.__new__

FlowKey = bytes  # source address, destination address, source port, destination port (see packet.Decoded)


def endpoint(address: bytes, port: int) -> Endpoint:
    family = socket.AF_INET if len(address) == 4 else socket.AF_INET6
    return Endpoint(socket.inet_ntop(family, address), port)


def split_flow_key(key: FlowKey) -> tuple[bytes, bytes, FlowKey]:
    """(source address, destination address, the key of the opposite direction)."""
    size = (len(key) - 4) // 2
    src, dst, ports = key[:size], key[size:2 * size], key[2 * size:]
    return src, dst, dst + src + ports[2:] + ports[:2]


def _signed(difference: int) -> int:
    """A 32-bit sequence difference as a signed number (RFC 1982 serial arithmetic)."""
    return ((difference + _SEQ_HALF) & _SEQ_MASK) - _SEQ_HALF


class _Direction:
    """One direction of a connection: where the stream stands and what waits beyond a gap."""

    __slots__ = ("direction", "fin_offset", "next_seq", "offset", "peer_ack", "pending", "pending_bytes",
                 "pending_since_ns")

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.next_seq = -1  # unknown until a SYN or the first data of this direction
        self.offset = 0  # stream offset of next_seq
        self.pending: list[tuple[int, int, bytes, int]] = []  # (offset, timestamp, data, length) beyond a gap
        self.pending_bytes = 0
        self.pending_since_ns = 0
        self.peer_ack = -1  # last acknowledgment number the other side sent for this direction
        self.fin_offset = -1


class _Connection:
    __slots__ = ("closed", "conn", "keys", "sides")

    def __init__(self, conn: int, keys: tuple[FlowKey, FlowKey]) -> None:
        self.conn = conn
        self.keys = keys  # (client -> server, server -> client)
        self.sides = (_Direction(Direction.REQUEST), _Direction(Direction.RESPONSE))
        self.closed = False


class TcpReassembler:
    """Reassembles every TCP connection of a capture; emitted items are appended to `out`.

    `ports` decides which side is the server. Give-up bounds: a direction stops waiting for a gap to be filled
    once `max_pending_bytes` or `max_pending_segments` wait beyond it, or its oldest waiting segment is
    `max_wait_ns` older than the newest packet of that direction.
    """

    def __init__(self, ports: frozenset[int], health: CaptureHealth, out: list[StreamItem], conn_ids: Iterator[int],
                 *, max_pending_bytes: int = 4 << 20, max_pending_segments: int = 1024,
                 max_wait_ns: int = 2_000_000_000) -> None:
        self._ports = ports
        self._health = health
        self._out = out
        self._append = out.append
        self._conn_ids = conn_ids
        self._max_pending_bytes = max_pending_bytes
        self._max_pending_segments = max_pending_segments
        self._max_wait_ns = max_wait_ns
        self._flows: dict[FlowKey, tuple[_Connection, _Direction, _Direction]] = {}
        self._open: dict[int, _Connection] = {}
        self._recently_closed: deque[tuple[int, _Connection]] = deque()

    def segment(self, timestamp_ns: int, segment: Decoded, buf: Buffer) -> None:
        """One decoded TCP segment; its payload is read from `buf`, the buffer it was decoded from."""
        _, key, sport, dport, seq, ack, flags, payload, payload_end, length = segment
        flow = self._flows.get(key)
        if flow is not None and flags & 0x17 == 0x10:
            # The established-connection path (ACK without SYN, FIN or RST), kept flat and with literal constants:
            # almost every segment of a capture takes it.
            connection, side, reverse = flow
            reverse.peer_ack = ack
            if reverse.pending:
                self._give_up_if_acknowledged(connection, reverse)
            if not length:
                return
            if connection.closed:
                self._health.retransmitted_bytes += length
                return
            if seq == side.next_seq and not side.pending and payload_end - payload == length:
                self._health.bytes_seen += length
                self._append(_new_tuple(StreamChunk, (connection.conn, side.direction, side.offset,
                                                      buf[payload:payload_end], length, timestamp_ns)))
                side.offset += length
                side.next_seq = (seq + length) & 0xFFFFFFFF
            else:
                self._out_of_line(timestamp_ns, connection, side, seq, buf[payload:payload_end], length)
            return
        if flow is None or (flags & TCP_SYN and not flags & TCP_ACK and self._is_new_syn(flow, seq)):
            if not (length or flags & TCP_SYN):
                return  # a bare ACK or FIN of a connection the capture knows nothing of carries nothing to record
            flow = self._new_connection(timestamp_ns, key, sport, dport, flags, seq, ack)
        connection, side, reverse = flow
        if flags & TCP_ACK:
            reverse.peer_ack = ack
            if reverse.pending:
                self._give_up_if_acknowledged(connection, reverse)
        if connection.closed:
            self._health.retransmitted_bytes += length
            return
        if flags & TCP_SYN:
            if side.next_seq < 0:
                side.next_seq = (seq + 1) & _SEQ_MASK
            seq = (seq + 1) & _SEQ_MASK
        if length:
            self._out_of_line(timestamp_ns, connection, side, seq, buf[payload:payload_end], length)
        if flags & (TCP_FIN | TCP_RST):
            self._end_of_direction(timestamp_ns, connection, side, seq, length, flags)

    def finish(self, timestamp_ns: int) -> None:
        """The capture ended: every gap is final and every open connection closes."""
        for connection in list(self._open.values()):
            self._close(timestamp_ns, connection)

    def _is_new_syn(self, flow: tuple[_Connection, _Direction, _Direction], seq: int) -> bool:
        """A SYN on a known 4-tuple starts a new connection unless it repeats the one that opened this one."""
        connection, side, _ = flow
        return connection.closed or side.next_seq < 0 or (seq + 1) & _SEQ_MASK != side.next_seq or side.offset > 0

    def _new_connection(self, timestamp_ns: int, key: FlowKey, sport: int, dport: int, flags: int, seq: int,
                        ack: int) -> tuple[_Connection, _Direction, _Direction]:
        if (dport in self._ports) != (sport in self._ports):
            client_is_src = dport in self._ports
        else:  # both ends on watched ports: the handshake, if seen, tells who connected to whom
            client_is_src = not (flags & TCP_SYN and flags & TCP_ACK)
        src, dst, reverse_key = split_flow_key(key)
        keys = (key, reverse_key) if client_is_src else (reverse_key, key)
        old = self._flows.get(key)
        if old is not None and not old[0].closed:
            self._close(timestamp_ns, old[0])
        self._forget_closed_flows(timestamp_ns)
        connection = _Connection(next(self._conn_ids), keys)
        request, response = connection.sides
        mid_stream = not flags & TCP_SYN
        if flags & TCP_SYN and flags & TCP_ACK:
            request.next_seq = ack  # the client's SYN was missed, but its first data byte is what this acknowledges
        self._flows[keys[0]] = (connection, request, response)
        self._flows[keys[1]] = (connection, response, request)
        self._open[connection.conn] = connection
        self._health.connections += 1
        if mid_stream:
            self._health.mid_stream_connections += 1
        client, server = endpoint(src, sport), endpoint(dst, dport)
        if not client_is_src:
            client, server = server, client
        self._out.append(ConnectionOpened(connection.conn, client, server, Transport.TCP, timestamp_ns, mid_stream))
        return self._flows[key]

    def _forget_closed_flows(self, timestamp_ns: int) -> None:
        closed = self._recently_closed
        while closed and timestamp_ns - closed[0][0] > _CLOSED_FLOW_MEMORY_NS:
            _, connection = closed.popleft()
            for key in connection.keys:
                if self._flows.get(key, (None,))[0] is connection:
                    del self._flows[key]

    def _out_of_line(self, timestamp_ns: int, connection: _Connection, side: _Direction, seq: int, data: bytes,
                     length: int) -> None:
        """Data that is not simply the next bytes: the first of a mid-stream direction, old, or ahead of a gap."""
        health = self._health
        if side.next_seq < 0:
            side.next_seq = seq
        delta = _signed(seq - side.next_seq)
        if delta < 0:
            overlap = -delta
            if overlap >= length:
                health.retransmitted_bytes += length
                return
            health.retransmitted_bytes += overlap
            data = data[overlap:]
            length -= overlap
            delta = 0
        offset = side.offset + delta
        if side.fin_offset >= 0 and offset + length > side.fin_offset:
            # Bytes after this direction's FIN are not part of the stream.
            if offset >= side.fin_offset:
                return
            length = side.fin_offset - offset
            data = data[:length]
        if not side.pending:
            if delta == 0:
                self._emit(connection, side, offset, data, length, timestamp_ns)
                return
            side.pending_since_ns = timestamp_ns
        if delta:
            health.out_of_order_segments += 1
        self._wait(side, offset, timestamp_ns, data, length)
        if delta == 0:
            self._drain(connection, side, timestamp_ns)
        elif (side.pending_bytes > self._max_pending_bytes or len(side.pending) > self._max_pending_segments
                or timestamp_ns - side.pending_since_ns > self._max_wait_ns):
            self._skip_gap(connection, side)
        else:
            self._give_up_if_acknowledged(connection, side)

    def _wait(self, side: _Direction, offset: int, timestamp_ns: int, data: bytes, length: int) -> None:
        """Keep a segment until the bytes before it arrive. The first copy of a byte wins: the parts that overlap
        segments already waiting are dropped and counted as retransmitted."""
        pieces = [(offset, data, length)]
        for waiting_offset, _, _, waiting_length in side.pending:
            waiting_end = waiting_offset + waiting_length
            remaining = []
            for piece_offset, piece_data, piece_length in pieces:
                piece_end = piece_offset + piece_length
                if piece_end <= waiting_offset or piece_offset >= waiting_end:
                    remaining.append((piece_offset, piece_data, piece_length))
                    continue
                if piece_offset < waiting_offset:
                    before = waiting_offset - piece_offset
                    remaining.append((piece_offset, piece_data[:before], before))
                if piece_end > waiting_end:
                    skip = waiting_end - piece_offset
                    remaining.append((waiting_end, piece_data[skip:], piece_end - waiting_end))
                self._health.retransmitted_bytes += min(piece_end, waiting_end) - max(piece_offset, waiting_offset)
            pieces = remaining
        for piece_offset, piece_data, piece_length in pieces:
            side.pending.append((piece_offset, timestamp_ns, piece_data, piece_length))
            side.pending_bytes += piece_length

    def _emit(self, connection: _Connection, side: _Direction, offset: int, data: bytes, length: int,
              timestamp_ns: int) -> None:
        """Emit bytes at `offset` (never before side.offset; a jump past it is a hole) and advance the stream."""
        gap = offset - side.offset
        if gap:
            self._count_hole(gap)
        self._health.bytes_seen += len(data)
        if len(data) < length:
            self._count_hole(length - len(data))
        self._out.append(StreamChunk(connection.conn, side.direction, offset, data, length, timestamp_ns))
        side.next_seq = (side.next_seq + gap + length) & _SEQ_MASK
        side.offset = offset + length

    def _drain(self, connection: _Connection, side: _Direction, released_ns: int) -> None:
        """Emit waiting segments that have become contiguous. Bytes released by a late filler are usable only
        from the filler's time on, so they take that time when it is later than their own (`released_ns`)."""
        pending = side.pending
        pending.sort(key=lambda segment: segment[0])
        taken = 0
        for offset, timestamp_ns, data, length in pending:
            if offset > side.offset:
                break
            taken += 1
            overlap = side.offset - offset
            if overlap >= length:
                self._health.retransmitted_bytes += length
                continue
            self._health.retransmitted_bytes += overlap
            self._emit(connection, side, side.offset, data[overlap:], length - overlap, max(timestamp_ns, released_ns))
        del pending[:taken]
        side.pending_bytes = sum(segment[3] for segment in pending)
        if pending:
            side.pending_since_ns = min(segment[1] for segment in pending)

    def _skip_gap(self, connection: _Connection, side: _Direction) -> None:
        """Stop waiting: the gap before the first waiting segment becomes a hole, and what follows is emitted."""
        pending = side.pending
        pending.sort(key=lambda segment: segment[0])
        offset, timestamp_ns, data, length = pending.pop(0)
        self._emit(connection, side, offset, data, length, timestamp_ns)
        self._drain(connection, side, 0)

    def _give_up_if_acknowledged(self, connection: _Connection, side: _Direction) -> None:
        """The peer acknowledged the whole gap: it has those bytes, so no retransmission will ever show them."""
        if side.peer_ack < 0 or side.next_seq < 0:
            return
        acknowledged_offset = side.offset + _signed(side.peer_ack - side.next_seq)
        while side.pending and acknowledged_offset >= min(segment[0] for segment in side.pending):
            self._skip_gap(connection, side)

    def _end_of_direction(self, timestamp_ns: int, connection: _Connection, side: _Direction, seq: int, length: int,
                          flags: int) -> None:
        if flags & TCP_RST:
            self._close(timestamp_ns, connection)
            return
        if side.next_seq < 0:
            side.next_seq = seq
        fin_offset = side.offset + _signed((seq + length - side.next_seq) & _SEQ_MASK)
        if fin_offset >= side.offset and side.fin_offset < 0:
            side.fin_offset = fin_offset
        request, response = connection.sides
        if request.fin_offset >= 0 and response.fin_offset >= 0:
            self._close(timestamp_ns, connection)

    def _close(self, timestamp_ns: int, connection: _Connection) -> None:
        """Flush both directions (what still waits is past a hole now; a FIN past the last byte is a tail hole)."""
        for side in connection.sides:
            while side.pending:
                self._skip_gap(connection, side)
            if side.fin_offset > side.offset:
                self._emit(connection, side, side.offset, b"", side.fin_offset - side.offset, timestamp_ns)
        connection.closed = True
        del self._open[connection.conn]
        self._recently_closed.append((timestamp_ns, connection))
        self._out.append(ConnectionClosed(connection.conn, timestamp_ns))

    def _count_hole(self, missing: int) -> None:
        self._health.holes += 1
        self._health.bytes_missing += missing
