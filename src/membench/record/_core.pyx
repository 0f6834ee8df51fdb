# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled twin of record/pipeline.py's RecordPipeline: the same calls, the same rows, as columns.

Parsers, pairing, the keyed hash and the rows are C; a unit becomes a C struct, never a Python object, and a row is
a set of column entries. Lines the twin does not handle itself are decided by the specification's own handlers
(see _core_text.pxi). MEMBENCH_NO_EXTENSIONS=1 selects the specification instead.

The same parsers serve replay: _core_replay.pxi's ReplyMatcher, the twin of replay/inflight.py, takes their units
in place of a pairer (both are UnitSinks), so a reply is framed by one parser whichever side reads it.
"""

cimport cython
from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove, memset
from posix.mman cimport MADV_HUGEPAGE, madvise
from posix.stdlib cimport posix_memalign

cdef size_t HUGE_PAGE = 1 << 21

include "_core_tables.pxi"
include "_core_units.pxi"
include "_core_keyhash.pxi"
include "_core_text.pxi"
include "_core_meta.pxi"
include "_core_columns.pxi"
include "_core_fit.pxi"
include "_core_pairing.pxi"
include "_core_parser.pxi"
include "_core_lines.pxi"
include "_core_packets.pxi"
include "_core_ring.pxi"
include "_core_groups.pxi"
include "_core_replay.pxi"


cdef class _Connection:
    cdef uint32_t number
    cdef DirectionParser request_parser, response_parser
    cdef Pairer pairer
    cdef int64_t[2] next_offset


@cython.final
cdef class RecordPipeline:
    """See record/pipeline.py: connections, parsers and pairing of one capture."""

    cdef KeyedHash hasher
    cdef MemoSlot* memo  # NULL unless keys are remembered
    cdef dict connections
    # The connections of the latest records, by id: most records find theirs here without a Python int and a dict
    # lookup. A slot is cleared before its connection leaves `connections`, which keeps the reference alive.
    cdef uint64_t[256] recent_ids
    cdef void* recent[256]
    cdef uint32_t connection_count
    cdef PairingCounters counters
    cdef Columns rows
    cdef dict parser_totals

    def __cinit__(self, bytes salt not None, bint remember_keys=False):
        if len(salt) != 16:
            raise ValueError("salt must be 16 bytes")
        keyed_hash_init(&self.hasher, salt)
        self.memo = _huge_page_table(MEMO_SLOTS * sizeof(MemoSlot)) if remember_keys else NULL
        self.connections = {}
        memset(self.recent, 0, sizeof(self.recent))
        self.connection_count = 0
        self.counters = PairingCounters()
        self.rows = Columns()
        self.parser_totals = {}

    def __dealloc__(self):
        free(self.memo)

    @property
    def operations(self):
        return self.counters.operations

    @property
    def connections_open(self):
        return len(self.connections)

    @property
    def connections_total(self):
        return self.connection_count

    @property
    def buffered_rows(self):
        return self.rows.size

    def open(self, conn, bint mid_stream):
        self._state(conn, mid_stream)

    cdef _Connection _state(self, conn, bint mid_stream):
        cdef _Connection state = self.connections.get(conn)
        if state is None:
            state = _Connection()
            state.number = self.connection_count
            self.connection_count += 1
            state.request_parser = DirectionParser(True, mid_stream)
            state.response_parser = DirectionParser(False, mid_stream)
            state.pairer = Pairer()
            state.pairer.connection = state.number
            state.pairer.counters = self.counters
            state.pairer.rows = self.rows
            state.pairer.hasher = &self.hasher
            state.pairer.memo = self.memo
            state.next_offset[0] = state.next_offset[1] = 0
            self.connections[conn] = state
        return state

    def chunk(self, conn, int direction, int64_t offset, bytes data, int64_t length, int64_t timestamp_ns):
        cdef _Connection state = self.connections.get(conn)
        if state is None:
            state = self._state(conn, True)
        self._chunk(state, direction, offset, data, 0, len(data), length, timestamp_ns)

    cdef int _chunk(self, _Connection state, int direction, int64_t offset, const uint8_t* data, Py_ssize_t at,
                    Py_ssize_t size, int64_t length, int64_t ts) except -1:
        cdef DirectionParser parser = state.request_parser if direction == 0 else state.response_parser
        cdef int64_t expected = state.next_offset[direction], overlap
        cdef Pairer pairer = state.pairer
        data += at
        if offset > expected:
            parser.receive_hole(offset - expected, ts, pairer)
        elif offset < expected:
            overlap = expected - offset
            if overlap >= length:
                return 0
            if overlap >= size:
                size = 0
            else:
                data += overlap
                size -= overlap
            length -= overlap
            offset = expected
        if size:
            parser.receive(data, size, ts, pairer)
        if size < length:
            parser.receive_hole(length - size, ts, pairer)
        state.next_offset[direction] = offset + length
        return 0

    def drain_ring(self, ring, Py_ssize_t data_start, uint64_t consumer, uint64_t producer, uint64_t mask,
                   bint server_side, Py_ssize_t limit):
        """ring.decode_records into this pipeline; returns (consumer, records, bytes seen, truncated events,
        truncated bytes, connections, mid-stream connections)."""
        cdef const uint8_t[::1] view = ring
        cdef const uint8_t* base = &view[0] + data_start + RING_HEADER
        cdef const uint8_t* event
        cdef uint32_t length, copied, moved
        cdef int64_t records = 0, seen = 0, truncated_events = 0, truncated_bytes = 0, opened = 0, mid = 0
        cdef int kind, direction
        cdef bint mid_stream
        cdef _Connection state
        cdef uint64_t conn_id
        cdef Py_ssize_t slot
        while consumer < producer and records < limit:
            event = base + (consumer & mask)
            length = _u32(event - RING_HEADER)
            if length & RING_BUSY:
                break
            consumer += ((length & ~RING_DISCARD) + RING_HEADER + 7) & ~7ULL
            if length & RING_DISCARD:
                continue
            records += 1
            kind = event[AT_TYPE]
            conn_id = _u64(event + AT_CONN)
            if kind == EVENT_DATA:
                slot = conn_id & 255
                if self.recent[slot] != NULL and self.recent_ids[slot] == conn_id:
                    state = <_Connection>self.recent[slot]
                else:
                    conn = conn_id
                    state = self.connections.get(conn)
                    if state is None:
                        state = self._state(conn, True)
                        opened += 1
                        mid += 1
                    self.recent_ids[slot] = conn_id
                    self.recent[slot] = <void*>state
                moved = _u32(event + AT_LENGTH)
                copied = _u32(event + AT_COPIED)
                direction = event[AT_DIRECTION] if server_side else 1 - event[AT_DIRECTION]
                self._chunk(state, direction, <int64_t>_u64(event + AT_OFFSET), event + EVENT_SIZE, 0, copied,
                            moved, <int64_t>_u64(event + AT_TIMESTAMP))
                seen += copied
                if copied < moved:
                    truncated_events += 1
                    truncated_bytes += moved - copied
            elif kind == EVENT_OPEN:
                mid_stream = (_u16(event + AT_FLAGS) & FLAG_MID_STREAM) != 0
                self._state(conn_id, mid_stream)
                opened += 1
                mid += mid_stream
            elif kind == EVENT_CLOSE:
                self.close(conn_id, <int64_t>_u64(event + AT_TIMESTAMP))
        return consumer, records, seen, truncated_events, truncated_bytes, opened, mid

    def close(self, conn, int64_t timestamp_ns):
        cdef _Connection state = self.connections.get(conn)
        cdef Py_ssize_t slot
        if state is None:
            return
        for slot in range(256):
            if self.recent[slot] == <void*>state:
                self.recent[slot] = NULL
        del self.connections[conn]
        state.request_parser.close(timestamp_ns, state.pairer)
        state.response_parser.close(timestamp_ns, state.pairer)
        state.pairer.close()
        _add_parser_stats(self.parser_totals, state)

    def close_all(self, int64_t timestamp_ns):
        for conn in list(self.connections):
            self.close(conn, timestamp_ns)

    def packet_feed(self, ports, health, conn_ids):
        """A PacketFeed: packets of a capture decoded, reassembled and parsed into this pipeline."""
        return PacketFeed(self, ports, health, conn_ids)

    def flush_to(self, sink):
        if self.rows.size:
            sink.write_columns(self.rows.take())

    def take_rows(self):
        return [tuple(row.values()) for row in self.rows.take().to_pylist()]

    def keys_for(self, hashes):
        """The keys behind `hashes` still in the memo (see KeyHasher.keys_for); none unless keys are remembered."""
        cdef set wanted = set(hashes)
        cdef dict found = {}
        cdef Py_ssize_t i
        if self.memo == NULL:
            return found
        for i in range(MEMO_SLOTS):
            if self.memo[i].length and self.memo[i].value in wanted:
                found[self.memo[i].value] = PyBytes_FromStringAndSize(<char*>self.memo[i].key, self.memo[i].length)
        return found

    def health(self):
        parser = dict(self.parser_totals)
        for state in self.connections.values():
            _add_parser_stats(parser, state)
        return parser, self.counters.as_dict()


cdef MemoSlot* _huge_page_table(size_t size) except NULL:
    """Zeroed memory on 2 MiB pages where the kernel gives them (THP on madvise): the memo is looked up at random,
    and on 4 KiB pages nearly every lookup also missed the TLB (perf showed the prefetch stalled on page walks)."""
    cdef void* table = NULL
    if posix_memalign(&table, HUGE_PAGE, size) != 0:
        raise MemoryError()
    madvise(table, size, MADV_HUGEPAGE)  # advice only: 4 KiB pages still work
    memset(table, 0, size)
    return <MemoSlot*>table


cdef _add_parser_stats(dict totals, _Connection state):
    for parser, prefix in ((state.request_parser, "request_"), (state.response_parser, "response_")):
        for name, value in parser.stats().items():
            totals[prefix + name] = totals.get(prefix + name, 0) + value


# The capture side of the twin follows the pipeline it feeds (it calls the pipeline's C methods).
include "_core_decode.pxi"
include "_core_tcp.pxi"
include "_core_capture.pxi"
include "_core_udp.pxi"
