# capture/pcap.py's packet loops and capture/demux.py's routing, feeding this pipeline directly: a pcap file's
# records (and a pcapng file's packet blocks) are walked in C, decoded, reassembled and parsed without a Python
# object per packet. Blocks that describe rather than carry packets go back to pcap.py, which reads them as the
# specification does.

from cpython.bytes cimport PyBytes_FromStringAndSize

from membench.capture.packet import SUPPORTED_LINK_TYPES

cdef enum:
    WALK_MORE = 0  # the batch limit was reached
    WALK_END = 1  # the file ended on a record boundary
    WALK_TRUNCATED = 2  # the file ended inside a record (a capture cut short)
    WALK_CORRUPT = 3  # a record length no capture writes
    WALK_CORRUPT_PACKET = 4  # a pcapng packet block whose fields do not fit it
    WALK_BLOCK = 5  # a pcapng block for pcap.py to read (at its start)
    MAX_RECORD = 1 << 26
    PCAPNG_SHB = 0x0A0D0D0A
    PCAPNG_OPB = 2
    PCAPNG_EPB = 6


cdef class CaptureCounters:
    """CaptureHealth's counters as C integers: what was counted since the last `add_to`."""
    cdef int64_t packets, bytes_seen, bytes_missing, holes, retransmitted_bytes, out_of_order_segments
    cdef int64_t malformed_packets, connections, mid_stream_connections, fragments

    cdef inline void hole(self, int64_t missing) noexcept:
        self.holes += 1
        self.bytes_missing += missing

    cdef add_to(self, health):
        health.packets += self.packets
        health.bytes_seen += self.bytes_seen
        health.bytes_missing += self.bytes_missing
        health.holes += self.holes
        health.retransmitted_bytes += self.retransmitted_bytes
        health.out_of_order_segments += self.out_of_order_segments
        health.malformed_packets += self.malformed_packets
        health.connections += self.connections
        health.mid_stream_connections += self.mid_stream_connections
        if self.fragments:
            key = "ip_fragments_unsupported"
            health.extra[key] = health.extra.get(key, 0) + self.fragments
        self.packets = self.bytes_seen = self.bytes_missing = self.holes = self.retransmitted_bytes = 0
        self.out_of_order_segments = self.malformed_packets = self.connections = self.mid_stream_connections = 0
        self.fragments = 0


cdef inline uint32_t _u32_order(const uint8_t* p, bint big_endian) noexcept:
    return _be32(p) if big_endian else _u32(p)


cdef class PacketFeed:
    """Packets of one capture into one RecordPipeline; made by RecordPipeline.packet_feed(ports, health)."""
    cdef RecordPipeline pipeline
    cdef uint8_t[8192] ports  # a bit per port number
    cdef CaptureCounters counters
    cdef TcpTwin tcp
    cdef UdpTwin udp
    cdef object health
    cdef set reported_link_types
    cdef readonly int64_t last_timestamp_ns

    def __cinit__(self, RecordPipeline pipeline, ports, health, conn_ids):
        memset(self.ports, 0, sizeof(self.ports))
        for port in ports:
            self.ports[<uint32_t>port >> 3] |= 1 << (<uint32_t>port & 7)
        self.pipeline = pipeline
        self.counters = CaptureCounters()
        self.health = health
        self.tcp = TcpTwin.__new__(TcpTwin)
        self.tcp.pipeline = pipeline
        self.tcp.counters = self.counters
        self.tcp.conn_ids = conn_ids
        self.tcp.flows = {}
        self.tcp.open_connections = {}
        self.tcp.recently_closed = deque()
        self.tcp.ports = self.ports
        self.tcp.max_pending_bytes = 4 << 20
        self.tcp.max_pending_segments = 1024
        self.tcp.max_wait_ns = 2000000000
        self.udp = UdpTwin.__new__(UdpTwin)
        self.udp.pipeline = pipeline
        self.udp.counters = self.counters
        self.udp.conn_ids = conn_ids
        self.udp.flows = {}
        self.udp.all_flows = []
        self.udp.ports = self.ports
        self.udp.max_pending_messages = 64
        self.udp.max_wait_ns = 1000000000
        self.reported_link_types = set()
        self.last_timestamp_ns = 0

    def packet(self, int link, const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t end, int64_t timestamp_ns):
        """One packet captured in buf[start:end] (Demultiplexer.packet)."""
        self.counters.packets += 1
        self._packet(link, &buf[0], start, end, timestamp_ns)
        self.counters.add_to(self.health)

    def walk_pcap(self, const uint8_t[::1] buf, Py_ssize_t at, bint big_endian, int64_t fraction_ns, int link,
                  Py_ssize_t limit):
        """Up to `limit` records of a classic pcap file from byte `at`: (where it stopped, WALK_* status)."""
        cdef Py_ssize_t size = buf.shape[0], start, count = 0
        cdef const uint8_t* base = &buf[0]
        cdef uint32_t captured
        cdef int status = WALK_MORE
        cdef int64_t ts
        while count < limit:
            if at + 16 > size:
                status = WALK_END if at == size else WALK_TRUNCATED
                break
            captured = _u32_order(base + at + 8, big_endian)
            start = at + 16
            if start + captured > size:
                status = WALK_CORRUPT if captured > MAX_RECORD else WALK_TRUNCATED
                break
            ts = (<int64_t>_u32_order(base + at, big_endian) * 1000000000
                  + <int64_t>_u32_order(base + at + 4, big_endian) * fraction_ns)
            at = start + captured
            count += 1
            self.last_timestamp_ns = ts
            self._packet(link, base, start, at, ts)
        self.counters.packets += count
        self.counters.add_to(self.health)
        return at, status

    def walk_pcapng(self, const uint8_t[::1] buf, Py_ssize_t at, bint big_endian, list interfaces,
                    Py_ssize_t limit):
        """Up to `limit` blocks of a pcapng section from byte `at`, stopping at any block other than an enhanced
        or obsolete packet block (WALK_BLOCK): pcap.py reads those. `interfaces` are pcap._Interface tuples."""
        cdef Py_ssize_t size = buf.shape[0], end, start, count = 0
        cdef const uint8_t* base = &buf[0]
        cdef uint32_t block_type, block_length, interface_id, captured
        cdef int status = WALK_MORE
        while count < limit:
            if at + 12 > size:
                status = WALK_END if at == size else WALK_TRUNCATED
                break
            block_type = _u32_order(base + at, big_endian)
            block_length = _u32_order(base + at + 4, big_endian)
            if block_type == PCAPNG_SHB or (block_type != PCAPNG_EPB and block_type != PCAPNG_OPB):
                status = WALK_BLOCK
                break
            end = at + block_length
            if block_length & 3 or block_length < 12 or end > size:
                if block_length & 3 or block_length < 12 or block_length > MAX_RECORD:
                    status = WALK_CORRUPT
                else:
                    status = WALK_TRUNCATED
                break
            if _u32_order(base + end - 4, big_endian) != block_length:
                status = WALK_CORRUPT
                break
            if block_length < 32:
                status = WALK_CORRUPT_PACKET
                break
            interface_id = _u32_order(base + at + 8, big_endian)
            if block_type == PCAPNG_OPB:  # a 16-bit interface id followed by a 16-bit drop count
                interface_id = interface_id >> 16 if big_endian else interface_id & 0xFFFF
            captured = _u32_order(base + at + 20, big_endian)
            start = at + 28
            if interface_id >= len(interfaces) or start + captured > end - 4:
                status = WALK_CORRUPT_PACKET
                break
            link, _, multiplier, divisor, offset_ns = interfaces[interface_id]
            ticks = (<uint64_t>_u32_order(base + at + 12, big_endian) << 32) | _u32_order(base + at + 16, big_endian)
            try:
                self.last_timestamp_ns = ticks * multiplier // divisor + offset_ns
            except OverflowError:  # past int64 nanoseconds (1678-2262): no clock wrote it, as pcapng.py checks
                status = WALK_CORRUPT_PACKET
                break
            count += 1
            self._packet(link, base, start, start + captured, self.last_timestamp_ns)
            at = end
        self.counters.packets += count
        self.counters.add_to(self.health)
        return at, status

    def finish(self, int64_t timestamp_ns):
        """The capture ended: every gap is final and every connection closes (Demultiplexer.finish)."""
        self.tcp.finish(timestamp_ns)
        self.udp.finish(timestamp_ns)
        self.counters.add_to(self.health)

    cdef int _packet(self, int link, const uint8_t* buf, Py_ssize_t start, Py_ssize_t end, int64_t ts) except -1:
        cdef Segment segment
        cdef int code = decode_packet(link, buf, start, end, self.ports, &segment)
        if code == PACKET_TCP:
            self.tcp.segment(ts, &segment, buf)
        elif code == PACKET_UDP:
            self.udp.datagram(ts, &segment, buf)
        elif code == PACKET_MALFORMED:
            self.counters.malformed_packets += 1
            if link not in SUPPORTED_LINK_TYPES and link not in self.reported_link_types:
                self.reported_link_types.add(link)
                self.health.extra[f"unsupported_link_type_{link}"] = 1
        elif code == PACKET_FRAGMENT:
            self.counters.fragments += 1
        return 0
