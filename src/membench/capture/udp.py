"""memcached over UDP: strip the 8-byte frame header and reassemble multi-datagram messages into stream chunks.

Every datagram starts with a frame header: request id, sequence number, datagram count, reserved (clients may put
anything there). Each UDP flow (client address and port, server address and port) becomes one pseudo-connection;
a message's payload is emitted as one chunk once all its datagrams arrived, at offsets that grow message by
message. A message that never completes (a lost datagram) is emitted with its gaps as empty chunks whose length is
an estimate: memcached fills every datagram but the last one to the same size, so a missing datagram is taken to be
as large as the largest one seen of that message.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

from membench.capture.packet import Buffer, Decoded
from membench.capture.stream import (
    CaptureHealth,
    ConnectionClosed,
    ConnectionOpened,
    Direction,
    StreamChunk,
    StreamItem,
    Transport,
)
from membench.capture.tcp import FlowKey, endpoint, split_flow_key

FRAME_HEADER = struct.Struct("!HHHH")  # request id, sequence number, datagram count, reserved
_HEADER_SIZE: Final = FRAME_HEADER.size


class _Message:
    __slots__ = ("count", "first_ns", "last_ns", "parts")

    def __init__(self, count: int, timestamp_ns: int) -> None:
        self.count = count
        self.parts: dict[int, tuple[bytes, int]] = {}  # sequence number -> (captured payload, payload length)
        self.first_ns = timestamp_ns
        self.last_ns = timestamp_ns


class _Side:
    __slots__ = ("direction", "offset", "pending")

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.offset = 0
        self.pending: dict[int, _Message] = {}  # request id -> message still missing datagrams


class _Flow:
    __slots__ = ("conn", "sides")

    def __init__(self, conn: int) -> None:
        self.conn = conn
        self.sides = (_Side(Direction.REQUEST), _Side(Direction.RESPONSE))


class UdpReassembler:
    """Turns memcached UDP datagrams into chunks of per-flow pseudo-connections; items are appended to `out`.

    An incomplete message is given up (emitted with holes) once `max_pending_messages` others wait in the same
    direction of its flow, once it is `max_wait_ns` older than the newest datagram of that direction, or at the end.
    """

    def __init__(self, ports: frozenset[int], health: CaptureHealth, out: list[StreamItem], conn_ids: Iterator[int],
                 *, max_pending_messages: int = 64, max_wait_ns: int = 1_000_000_000) -> None:
        self._ports = ports
        self._health = health
        self._out = out
        self._conn_ids = conn_ids
        self._max_pending_messages = max_pending_messages
        self._max_wait_ns = max_wait_ns
        self._flows: dict[FlowKey, tuple[_Flow, _Side]] = {}
        self._all_flows: list[_Flow] = []

    def datagram(self, timestamp_ns: int, datagram: Decoded, buf: Buffer) -> None:
        """One decoded UDP datagram; its payload is read from `buf`, the buffer it was decoded from."""
        _, key, sport, dport, _, _, _, payload_start, payload_end, length = datagram
        data = buf[payload_start:payload_end]
        if len(data) < _HEADER_SIZE:
            self._health.malformed_packets += 1
            return
        request_id, sequence, count, _ = FRAME_HEADER.unpack_from(data)
        if count == 0 or sequence >= count:
            self._health.malformed_packets += 1
            return
        known = self._flows.get(key)
        if known is None:
            known = self._new_flow(timestamp_ns, key, sport, dport)
        flow, side = known
        payload = data[_HEADER_SIZE:]
        payload_length = length - _HEADER_SIZE
        if count == 1:
            self._emit(flow, side, payload, payload_length, timestamp_ns)
            return
        message = side.pending.get(request_id)
        if message is None or message.count != count:
            if message is not None:
                self._give_up(flow, side, request_id)
            message = side.pending[request_id] = _Message(count, timestamp_ns)
        if sequence in message.parts:
            self._health.retransmitted_bytes += payload_length
            return
        message.parts[sequence] = (payload, payload_length)
        message.last_ns = timestamp_ns
        if len(message.parts) == count:
            del side.pending[request_id]
            parts = [message.parts[number] for number in range(count)]
            if all(len(part) == size for part, size in parts):
                self._emit(flow, side, b"".join(part for part, _ in parts), sum(size for _, size in parts),
                           timestamp_ns)
            else:  # a datagram cut by the snap length: each part keeps its own short tail in place
                for part, size in parts:
                    self._emit(flow, side, part, size, timestamp_ns)
        stale = [rid for rid, waiting in side.pending.items() if timestamp_ns - waiting.first_ns > self._max_wait_ns]
        excess = len(side.pending) - len(stale) - self._max_pending_messages
        if excess > 0:
            stale += [rid for rid in side.pending if rid not in stale][:excess]
        for rid in stale:
            self._give_up(flow, side, rid)

    def finish(self, timestamp_ns: int) -> None:
        """The capture ended: incomplete messages are emitted with their holes, and every flow closes."""
        for flow in self._all_flows:
            for side in flow.sides:
                for request_id in list(side.pending):
                    self._give_up(flow, side, request_id)
            self._out.append(ConnectionClosed(flow.conn, timestamp_ns))
        self._all_flows.clear()
        self._flows.clear()

    def _new_flow(self, timestamp_ns: int, key: FlowKey, sport: int, dport: int) -> tuple[_Flow, _Side]:
        client_is_src = dport in self._ports
        flow = _Flow(next(self._conn_ids))
        request, response = flow.sides
        src, dst, reverse_key = split_flow_key(key)
        self._flows[key] = (flow, request if client_is_src else response)
        self._flows[reverse_key] = (flow, response if client_is_src else request)
        self._all_flows.append(flow)
        self._health.connections += 1
        client, server = (endpoint(src, sport), endpoint(dst, dport))
        if not client_is_src:
            client, server = server, client
        self._out.append(ConnectionOpened(flow.conn, client, server, Transport.UDP, timestamp_ns, False))
        return self._flows[key]

    def _emit(self, flow: _Flow, side: _Side, data: bytes, length: int, timestamp_ns: int) -> None:
        self._health.bytes_seen += len(data)
        if len(data) < length:
            self._health.holes += 1
            self._health.bytes_missing += length - len(data)
        self._out.append(StreamChunk(flow.conn, side.direction, side.offset, data, length, timestamp_ns))
        side.offset += length

    def _give_up(self, flow: _Flow, side: _Side, request_id: int) -> None:
        """Emit what arrived of an incomplete message, each run of missing datagrams as an empty chunk."""
        message = side.pending.pop(request_id)
        estimate = max(1, *(size for _, size in message.parts.values()))
        missing_run = 0
        for number in range(message.count):
            part = message.parts.get(number)
            if part is None:
                missing_run += 1
                continue
            if missing_run:
                self._emit(flow, side, b"", estimate * missing_run, message.last_ns)
                missing_run = 0
            self._emit(flow, side, part[0], part[1], message.last_ns)
        if missing_run:
            self._emit(flow, side, b"", estimate * missing_run, message.last_ns)
