# capture/tcp.py's TcpReassembler, step for step, emitting into the pipeline instead of a list of items. In-order
# data goes from the capture buffer to the parser without a copy; what waits beyond a gap is kept as bytes, exactly
# as the specification keeps it (that path is rare and stays in Python objects).

from collections import deque
from operator import itemgetter

cdef int64_t SEQ_MASK = 0xFFFFFFFF
cdef int64_t CLOSED_FLOW_MEMORY_NS = 120 * 1000000000
cdef object _BY_OFFSET = itemgetter(0)


cdef inline int64_t _signed(int64_t difference) noexcept:
    """A 32-bit sequence difference as a signed number (RFC 1982 serial arithmetic)."""
    return ((difference + 0x80000000) & 0xFFFFFFFF) - 0x80000000


cdef class _TcpSide:
    cdef int direction
    cdef int64_t next_seq, offset, pending_bytes, pending_since_ns, peer_ack, fin_offset
    cdef list pending  # (offset, timestamp, data, length) beyond a gap

    def __cinit__(self, int direction):
        self.direction = direction
        self.next_seq = -1
        self.offset = 0
        self.pending = []
        self.pending_bytes = 0
        self.pending_since_ns = 0
        self.peer_ack = -1
        self.fin_offset = -1


cdef class _TcpConnection:
    cdef object conn
    cdef tuple keys
    cdef _TcpSide request, response
    cdef bint closed
    cdef _Connection state


cdef class _Flow:
    """What a flow key leads to: the connection, the direction it sends, and the opposite one."""
    cdef _TcpConnection connection
    cdef _TcpSide side, reverse


cdef _Flow _flow(_TcpConnection connection, _TcpSide side, _TcpSide reverse):
    cdef _Flow flow = _Flow.__new__(_Flow)
    flow.connection = connection
    flow.side = side
    flow.reverse = reverse
    return flow


cdef class TcpTwin:
    """The reassembler's state and give-up bounds (tcp.py's defaults); PacketFeed owns one."""
    cdef RecordPipeline pipeline
    cdef CaptureCounters counters
    cdef object conn_ids
    cdef dict flows, open_connections
    cdef object recently_closed
    cdef const uint8_t* ports
    cdef int64_t max_pending_bytes, max_pending_segments, max_wait_ns

    cdef int segment(self, int64_t ts, Segment* s, const uint8_t* buf) except -1:
        cdef bytes key = PyBytes_FromStringAndSize(<char*>s.key, s.key_size)
        cdef _Flow flow = self.flows.get(key)
        cdef _TcpConnection connection
        cdef _TcpSide side, reverse
        cdef int64_t length = s.length, seq = s.seq
        cdef int flags = s.flags
        if flow is not None and flags & 0x17 == 0x10:
            connection, side, reverse = flow.connection, flow.side, flow.reverse
            reverse.peer_ack = s.ack
            if reverse.pending:
                self._give_up_if_acknowledged(connection, reverse)
            if not length:
                return 0
            if connection.closed:
                self.counters.retransmitted_bytes += length
                return 0
            if seq == side.next_seq and not side.pending and s.payload_end - s.payload == length:
                self.counters.bytes_seen += length
                self.pipeline._chunk(connection.state, side.direction, side.offset, buf, s.payload, length, length,
                                     ts)
                side.offset += length
                side.next_seq = (seq + length) & SEQ_MASK
            else:
                self._out_of_line(ts, connection, side, seq, _slice(buf, s), length)
            return 0
        if flow is None or (flags & TCP_SYN and not flags & TCP_ACK and self._is_new_syn(flow, seq)):
            if not (length or flags & TCP_SYN):
                return 0
            flow = self._new_connection(ts, key, s, flags, seq)
        connection, side, reverse = flow.connection, flow.side, flow.reverse
        if flags & TCP_ACK:
            reverse.peer_ack = s.ack
            if reverse.pending:
                self._give_up_if_acknowledged(connection, reverse)
        if connection.closed:
            self.counters.retransmitted_bytes += length
            return 0
        if flags & TCP_SYN:
            if side.next_seq < 0:
                side.next_seq = (seq + 1) & SEQ_MASK
            seq = (seq + 1) & SEQ_MASK
        if length:
            self._out_of_line(ts, connection, side, seq, _slice(buf, s), length)
        if flags & (TCP_FIN | TCP_RST):
            self._end_of_direction(ts, connection, side, seq, length, flags)
        return 0

    cdef int finish(self, int64_t ts) except -1:
        for connection in list(self.open_connections.values()):
            self._close(ts, connection)
        return 0

    cdef bint _is_new_syn(self, _Flow flow, int64_t seq):
        cdef _TcpSide side = flow.side
        return (flow.connection.closed or side.next_seq < 0 or (seq + 1) & SEQ_MASK != side.next_seq
                or side.offset > 0)

    cdef _Flow _new_connection(self, int64_t ts, bytes key, Segment* s, int flags, int64_t seq):
        cdef bint client_is_src
        cdef _TcpConnection connection
        cdef _Flow old
        cdef bint mid_stream = not flags & TCP_SYN
        if _watched(self.ports, s.dport) != _watched(self.ports, s.sport):
            client_is_src = _watched(self.ports, s.dport)
        else:
            client_is_src = not (flags & TCP_SYN and flags & TCP_ACK)
        reverse_key = _reverse_key(key)
        keys = (key, reverse_key) if client_is_src else (reverse_key, key)
        old = self.flows.get(key)
        if old is not None and not old.connection.closed:
            self._close(ts, old.connection)
        self._forget_closed_flows(ts)
        connection = _TcpConnection.__new__(_TcpConnection)
        connection.conn = next(self.conn_ids)
        connection.keys = keys
        connection.request = _TcpSide(0)
        connection.response = _TcpSide(1)
        connection.closed = False
        if flags & TCP_SYN and flags & TCP_ACK:
            connection.request.next_seq = s.ack
        self.flows[keys[0]] = _flow(connection, connection.request, connection.response)
        self.flows[keys[1]] = _flow(connection, connection.response, connection.request)
        self.open_connections[connection.conn] = connection
        self.counters.connections += 1
        if mid_stream:
            self.counters.mid_stream_connections += 1
        connection.state = self.pipeline._state(connection.conn, mid_stream)
        return self.flows[key]

    cdef int _forget_closed_flows(self, int64_t ts) except -1:
        cdef _TcpConnection connection
        cdef _Flow known
        closed = self.recently_closed
        while closed and ts - <int64_t>closed[0][0] > CLOSED_FLOW_MEMORY_NS:
            connection = closed.popleft()[1]
            for key in connection.keys:
                known = self.flows.get(key)
                if known is not None and known.connection is connection:
                    del self.flows[key]
        return 0

    cdef int _out_of_line(self, int64_t ts, _TcpConnection connection, _TcpSide side, int64_t seq, bytes data,
                          int64_t length) except -1:
        cdef int64_t delta, overlap, offset
        if side.next_seq < 0:
            side.next_seq = seq
        delta = _signed(seq - side.next_seq)
        if delta < 0:
            overlap = -delta
            if overlap >= length:
                self.counters.retransmitted_bytes += length
                return 0
            self.counters.retransmitted_bytes += overlap
            data = data[overlap:]
            length -= overlap
            delta = 0
        offset = side.offset + delta
        if side.fin_offset >= 0 and offset + length > side.fin_offset:
            if offset >= side.fin_offset:
                return 0
            length = side.fin_offset - offset
            data = data[:length]
        if not side.pending:
            if delta == 0:
                self._emit(connection, side, offset, data, length, ts)
                return 0
            side.pending_since_ns = ts
        if delta:
            self.counters.out_of_order_segments += 1
        self._wait(side, offset, ts, data, length)
        if delta == 0:
            self._drain(connection, side, ts)
        elif (side.pending_bytes > self.max_pending_bytes or len(side.pending) > self.max_pending_segments
                or ts - side.pending_since_ns > self.max_wait_ns):
            self._skip_gap(connection, side)
        else:
            self._give_up_if_acknowledged(connection, side)
        return 0

    cdef int _wait(self, _TcpSide side, int64_t offset, int64_t ts, bytes data, int64_t length) except -1:
        cdef list pieces = [(offset, data, length)], remaining
        cdef int64_t waiting_offset, waiting_end, piece_offset, piece_length, piece_end
        for waiting in side.pending:
            waiting_offset = waiting[0]
            waiting_end = waiting_offset + <int64_t>waiting[3]
            remaining = []
            for piece_offset, piece_data, piece_length in pieces:
                piece_end = piece_offset + piece_length
                if piece_end <= waiting_offset or piece_offset >= waiting_end:
                    remaining.append((piece_offset, piece_data, piece_length))
                    continue
                if piece_offset < waiting_offset:
                    remaining.append((piece_offset, piece_data[:waiting_offset - piece_offset],
                                      waiting_offset - piece_offset))
                if piece_end > waiting_end:
                    remaining.append((waiting_end, piece_data[waiting_end - piece_offset:], piece_end - waiting_end))
                self.counters.retransmitted_bytes += (min(piece_end, waiting_end) - max(piece_offset, waiting_offset))
            pieces = remaining
        for piece_offset, piece_data, piece_length in pieces:
            side.pending.append((piece_offset, ts, piece_data, piece_length))
            side.pending_bytes += piece_length
        return 0

    cdef int _emit(self, _TcpConnection connection, _TcpSide side, int64_t offset, bytes data, int64_t length,
                   int64_t ts) except -1:
        cdef int64_t gap = offset - side.offset
        cdef Py_ssize_t size = len(data)
        if gap:
            self.counters.hole(gap)
        self.counters.bytes_seen += size
        if size < length:
            self.counters.hole(length - size)
        self.pipeline._chunk(connection.state, side.direction, offset, <const uint8_t*><char*>data, 0, size, length,
                             ts)
        side.next_seq = (side.next_seq + gap + length) & SEQ_MASK
        side.offset = offset + length
        return 0

    cdef int _drain(self, _TcpConnection connection, _TcpSide side, int64_t released_ns) except -1:
        cdef list pending = side.pending
        cdef Py_ssize_t taken = 0
        cdef int64_t offset, timestamp_ns, length, overlap
        pending.sort(key=_BY_OFFSET)
        for offset, timestamp_ns, data, length in pending:
            if offset > side.offset:
                break
            taken += 1
            overlap = side.offset - offset
            if overlap >= length:
                self.counters.retransmitted_bytes += length
                continue
            self.counters.retransmitted_bytes += overlap
            self._emit(connection, side, side.offset, data[overlap:], length - overlap, max(timestamp_ns, released_ns))
        del pending[:taken]
        side.pending_bytes = 0
        for segment in pending:
            side.pending_bytes += <int64_t>segment[3]
        if pending:
            side.pending_since_ns = min([segment[1] for segment in pending])
        return 0

    cdef int _skip_gap(self, _TcpConnection connection, _TcpSide side) except -1:
        side.pending.sort(key=_BY_OFFSET)
        offset, timestamp_ns, data, length = side.pending.pop(0)
        self._emit(connection, side, offset, data, length, timestamp_ns)
        self._drain(connection, side, 0)
        return 0

    cdef int _give_up_if_acknowledged(self, _TcpConnection connection, _TcpSide side) except -1:
        cdef int64_t acknowledged_offset
        if side.peer_ack < 0 or side.next_seq < 0:
            return 0
        acknowledged_offset = side.offset + _signed(side.peer_ack - side.next_seq)
        while side.pending and acknowledged_offset >= min([segment[0] for segment in side.pending]):
            self._skip_gap(connection, side)
        return 0

    cdef int _end_of_direction(self, int64_t ts, _TcpConnection connection, _TcpSide side, int64_t seq,
                               int64_t length, int flags) except -1:
        cdef int64_t fin_offset
        if flags & TCP_RST:
            self._close(ts, connection)
            return 0
        if side.next_seq < 0:
            side.next_seq = seq
        fin_offset = side.offset + _signed((seq + length - side.next_seq) & SEQ_MASK)
        if fin_offset >= side.offset and side.fin_offset < 0:
            side.fin_offset = fin_offset
        if connection.request.fin_offset >= 0 and connection.response.fin_offset >= 0:
            self._close(ts, connection)
        return 0

    cdef int _close(self, int64_t ts, _TcpConnection connection) except -1:
        for side in (connection.request, connection.response):
            while (<_TcpSide>side).pending:
                self._skip_gap(connection, side)
            if (<_TcpSide>side).fin_offset > (<_TcpSide>side).offset:
                self._emit(connection, side, (<_TcpSide>side).offset, b"",
                           (<_TcpSide>side).fin_offset - (<_TcpSide>side).offset, ts)
        connection.closed = True
        del self.open_connections[connection.conn]
        self.recently_closed.append((ts, connection))
        self.pipeline.close(connection.conn, ts)
        return 0


cdef inline bytes _slice(const uint8_t* buf, Segment* s):
    return PyBytes_FromStringAndSize(<const char*>buf + s.payload, s.payload_end - s.payload)


cdef bytes _reverse_key(bytes key):
    """tcp.split_flow_key's third answer: the key of the opposite direction."""
    cdef Py_ssize_t size = (len(key) - 4) // 2
    return key[size:2 * size] + key[:size] + key[2 * size + 2:] + key[2 * size:2 * size + 2]
