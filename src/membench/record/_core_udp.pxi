# capture/udp.py's UdpReassembler, step for step, emitting into the pipeline: memcached's 8-byte frame header
# stripped, multi-datagram messages joined, lost datagrams become holes of the estimated size.

cdef class _UdpMessage:
    cdef int count
    cdef dict parts  # sequence number -> (captured payload, payload length)
    cdef int64_t first_ns, last_ns


cdef class _UdpSide:
    cdef int direction
    cdef int64_t offset
    cdef dict pending  # request id -> message still missing datagrams


cdef class _UdpFlow:
    cdef object conn
    cdef _UdpSide request, response
    cdef _Connection state


cdef _UdpSide _udp_side(int direction):
    cdef _UdpSide side = _UdpSide.__new__(_UdpSide)
    side.direction = direction
    side.offset = 0
    side.pending = {}
    return side


cdef class UdpTwin:
    """The datagram side of a PacketFeed, with udp.py's give-up bounds."""
    cdef RecordPipeline pipeline
    cdef CaptureCounters counters
    cdef object conn_ids
    cdef dict flows  # flow key -> (flow, the side that key sends)
    cdef list all_flows
    cdef const uint8_t* ports
    cdef Py_ssize_t max_pending_messages
    cdef int64_t max_wait_ns

    cdef int datagram(self, int64_t ts, Segment* s, const uint8_t* buf) except -1:
        cdef bytes data = _slice(buf, s)
        cdef const uint8_t* header = buf + s.payload
        cdef uint32_t request_id, sequence, count
        cdef _UdpFlow flow
        cdef _UdpSide side
        cdef _UdpMessage message
        cdef int64_t payload_length = s.length - 8
        if len(data) < 8:
            self.counters.malformed_packets += 1
            return 0
        request_id, sequence, count = _be16(header), _be16(header + 2), _be16(header + 4)
        if count == 0 or sequence >= count:
            self.counters.malformed_packets += 1
            return 0
        key = PyBytes_FromStringAndSize(<char*>s.key, s.key_size)
        known = self.flows.get(key)
        if known is None:
            known = self._new_flow(ts, key, s)
        flow, side = known
        payload = data[8:]
        if count == 1:
            self._emit(flow, side, payload, payload_length, ts)
            return 0
        message = side.pending.get(request_id)
        if message is None or message.count != count:
            if message is not None:
                self._give_up(flow, side, request_id)
            message = _UdpMessage.__new__(_UdpMessage)
            message.count = count
            message.parts = {}
            message.first_ns = message.last_ns = ts
            side.pending[request_id] = message
        if sequence in message.parts:
            self.counters.retransmitted_bytes += payload_length
            return 0
        message.parts[sequence] = (payload, payload_length)
        message.last_ns = ts
        if len(message.parts) == count:
            del side.pending[request_id]
            self._complete(flow, side, message, ts)
        self._give_up_stale(flow, side, ts)
        return 0

    cdef int finish(self, int64_t ts) except -1:
        cdef _UdpFlow flow
        for flow in self.all_flows:
            for side in (flow.request, flow.response):
                for request_id in list((<_UdpSide>side).pending):
                    self._give_up(flow, side, request_id)
            self.pipeline.close(flow.conn, ts)
        self.all_flows.clear()
        self.flows.clear()
        return 0

    cdef tuple _new_flow(self, int64_t ts, bytes key, Segment* s):
        cdef bint client_is_src = _watched(self.ports, s.dport)
        cdef _UdpFlow flow = _UdpFlow.__new__(_UdpFlow)
        flow.conn = next(self.conn_ids)
        flow.request = _udp_side(0)
        flow.response = _udp_side(1)
        self.flows[key] = (flow, flow.request if client_is_src else flow.response)
        self.flows[_reverse_key(key)] = (flow, flow.response if client_is_src else flow.request)
        self.all_flows.append(flow)
        self.counters.connections += 1
        flow.state = self.pipeline._state(flow.conn, False)
        return self.flows[key]

    cdef int _complete(self, _UdpFlow flow, _UdpSide side, _UdpMessage message, int64_t ts) except -1:
        parts = [message.parts[number] for number in range(message.count)]
        if all([len(part) == size for part, size in parts]):
            self._emit(flow, side, b"".join([part for part, _ in parts]), sum([size for _, size in parts]), ts)
        else:  # a datagram cut by the snap length: each part keeps its own short tail in place
            for part, size in parts:
                self._emit(flow, side, part, size, ts)
        return 0

    cdef int _give_up_stale(self, _UdpFlow flow, _UdpSide side, int64_t ts) except -1:
        cdef _UdpMessage waiting
        stale = []
        for rid, waiting in side.pending.items():
            if ts - waiting.first_ns > self.max_wait_ns:
                stale.append(rid)
        excess = len(side.pending) - len(stale) - self.max_pending_messages
        if excess > 0:
            stale += [rid for rid in side.pending if rid not in stale][:excess]
        for rid in stale:
            self._give_up(flow, side, rid)
        return 0

    cdef int _emit(self, _UdpFlow flow, _UdpSide side, bytes data, int64_t length, int64_t ts) except -1:
        cdef Py_ssize_t size = len(data)
        self.counters.bytes_seen += size
        if size < length:
            self.counters.hole(length - size)
        self.pipeline._chunk(flow.state, side.direction, side.offset, <const uint8_t*><char*>data, 0, size, length,
                             ts)
        side.offset += length
        return 0

    cdef int _give_up(self, _UdpFlow flow, _UdpSide side, request_id) except -1:
        """Emit what arrived of an incomplete message, each run of missing datagrams as an empty chunk."""
        cdef _UdpMessage message = side.pending.pop(request_id)
        cdef int64_t estimate = max(1, max([size for _, size in message.parts.values()]))
        cdef int64_t missing_run = 0
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
        return 0
