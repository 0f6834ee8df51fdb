# One direction of one connection: stream.py's protocol detection, framing.py's bookkeeping, text.py's line framing
# and binary.py's packet framing, copied rule for rule; each unit goes straight to a UnitSink: record's pairer,
# or replay's in-flight matcher.

from libc.string cimport memchr

from membench.protocol.framing import ParserStats
from membench.protocol.stream import DETECTION_WINDOW
from membench.protocol.text import _END_SIZE, _SHORTEST_VALUE, LINE_MAX, RETRIEVAL_LINE_MAX

cdef Py_ssize_t _LINE_MAX = LINE_MAX
cdef Py_ssize_t _RETRIEVAL_LINE_MAX = RETRIEVAL_LINE_MAX
cdef Py_ssize_t _DETECTION_WINDOW = DETECTION_WINDOW
cdef Py_ssize_t HEADER_SIZE = 24
cdef uint64_t BODY_MAX = (1 << 30) + (1 << 16)
cdef int64_t END_SIZE = _END_SIZE
cdef int64_t SHORTEST_VALUE = _SHORTEST_VALUE
cdef enum:
    UNDECIDED = 0
    TEXT = 1
    BINARY = 2


@cython.final
cdef class DirectionParser:
    cdef public int64_t bytes_parsed, bytes_skipped, bytes_missing, bytes_missing_in_values, resyncs, errors
    cdef bint is_request, unsure, synced, discarding
    cdef int mode
    cdef uint8_t magic
    cdef list held  # (bytes, timestamp) seen while the protocol is undecided
    cdef uint8_t* tail
    cdef Py_ssize_t tail_size, tail_capacity
    cdef int64_t tail_ts
    cdef Unit unit  # the unit being made
    cdef UnitBytes pieces
    cdef Unit pending  # the unit whose payload is being counted down
    cdef UnitBytes pending_pieces
    cdef bint has_pending
    cdef int64_t remaining, pending_seen, skip
    cdef Tokens tokens
    cdef uint8_t* joined  # a binary head continued across chunks: tail + chunk
    cdef Py_ssize_t joined_capacity

    def __cinit__(self, bint is_request, bint mid_stream):
        self.is_request = is_request
        self.unsure = mid_stream
        self.synced = True
        self.mode = UNDECIDED
        self.magic = 0x80 if is_request else 0x81
        self.held = []
        self.pieces = UnitBytes()
        self.pending_pieces = UnitBytes()
        self.tokens = Tokens()

    def __dealloc__(self):
        free(self.tail)
        free(self.joined)

    def stats(self):
        return {"bytes_parsed": self.bytes_parsed, "bytes_skipped": self.bytes_skipped,
                "bytes_missing": self.bytes_missing, "bytes_missing_in_values": self.bytes_missing_in_values,
                "resyncs": self.resyncs, "errors": self.errors}

    # -- stream.py: which protocol ---------------------------------------------------------------------------

    cdef int receive(self, const uint8_t* data, Py_ssize_t size, int64_t ts, UnitSink sink) except -1:
        if self.mode == TEXT:
            return receive_lines(self, data, size, ts, sink)
        if self.mode == BINARY:
            return receive_packets(self, data, size, ts, sink)
        if size == 0:
            return 0
        if not self.unsure:
            self._decide(BINARY if data[0] == self.magic else TEXT)
            return self.receive(data, size, ts, sink)
        return self._detect((<const char*>data)[:size], ts, sink)

    cdef void _decide(self, int mode) noexcept:
        self.mode = mode
        self.synced = not self.unsure

    cdef int _detect(self, bytes data, int64_t ts, UnitSink sink) except -1:
        cdef bytes chunk
        cdef int64_t chunk_ts
        held = self.held
        held.append((data, ts))
        window = b"".join([chunk for chunk, _ in held])
        from membench.protocol import binary as binary_spec, text as text_spec
        if self.is_request:
            text, binary = text_spec.TextRequestParser(ParserStats(), False), binary_spec.BinaryRequestParser(
                ParserStats(), False)
        else:
            text, binary = text_spec.TextResponseParser(ParserStats(), False), binary_spec.BinaryResponseParser(
                ParserStats(), False)
        text_at = text.sync_offset(window)
        binary_at = binary.sync_offset(window)
        if text_at is None and binary_at is None:
            while len(window) > _DETECTION_WINDOW and len(held) > 1:
                dropped = len(held.pop(0)[0])
                window = window[dropped:]
                self.bytes_skipped += dropped
                self._skipped(sink)
            return 0
        use_binary = text_at is None or (binary_at is not None and (binary_at < text_at
                                                                     or binary.chained(window, binary_at)))
        self._decide(BINARY if use_binary else TEXT)
        self.held = []
        for chunk, chunk_ts in held:
            self.receive(<const uint8_t*><const char*>chunk, len(chunk), chunk_ts, sink)
        return 0

    cdef int receive_hole(self, int64_t length, int64_t ts, UnitSink sink) except -1:
        cdef int64_t excess
        if self.mode == UNDECIDED:
            if length <= 0:
                return 0
            self.bytes_missing += length
            self._drop_held()
            self.unsure = True
            self._skipped(sink)
            return 0
        if self.mode == BINARY:
            return self._framed_hole(length, ts, sink)
        if length > 0 and not self.remaining:
            self.discarding = False
        excess = length - self.remaining
        # text.TextResponseParser.receive_hole: a hole ending just past a text VALUE's data block held its END.
        if (self.is_request or not self.remaining or not END_SIZE <= excess < SHORTEST_VALUE
                or not self.has_pending or self.pending.protocol != P_TEXT or self.pending.reply != R_VALUE):
            return self._framed_hole(length, ts, sink)
        self._framed_hole(self.remaining, ts, sink)
        self.bytes_missing += END_SIZE
        self.bytes_missing_in_values += END_SIZE
        self.pieces.reset()
        _text_unit(&self.unit, False, R_END, ts, ts)
        sink.on_response(&self.unit, self.pieces)
        return self._framed_hole(excess - END_SIZE, ts, sink)

    cdef int close(self, int64_t ts, UnitSink sink) except -1:
        cdef int64_t partial
        if self.mode == UNDECIDED:
            if self._drop_held():
                self._skipped(sink)
            return 0
        self._flush_skip(sink)
        partial = self.tail_size + (self.pending_seen if self.remaining else 0)
        if partial:
            self.bytes_skipped += partial
            self._skipped(sink)
        self.tail_size = 0
        self.has_pending = False
        self.remaining = 0
        self.pending_seen = 0
        return 0

    cdef int64_t _drop_held(self) except -1:
        cdef int64_t held = sum([len(chunk) for chunk, _ in self.held])
        self.bytes_skipped += held
        self.held = []
        return held

    # -- framing.py: holes, payloads, skips ------------------------------------------------------------------

    cdef inline void _skipped(self, UnitSink sink) noexcept:
        """A Skipped event: only the reply direction's tell pairing anything (replies may be lost)."""
        if not self.is_request:
            sink.on_reply_hole()

    cdef int _framed_hole(self, int64_t length, int64_t ts, UnitSink sink) except -1:
        if length <= 0:
            return 0
        self.bytes_missing += length
        if self.remaining:
            self.bytes_missing_in_values += min(length, self.remaining)
            if length < self.remaining:
                self.remaining -= length
                return 0
            length -= self.remaining
            self._complete_pending(ts, sink)
            if not length:
                return 0
        self.bytes_skipped += self.tail_size
        self.tail_size = 0
        if self.synced:
            self.resyncs += 1
            self.synced = False
        self._skipped(sink)
        self.skip = 0
        return 0

    cdef Py_ssize_t _continue_payload(self, Py_ssize_t size, int64_t ts, UnitSink sink) except -1:
        cdef int64_t take = min(self.remaining, <int64_t>size)
        self.remaining -= take
        self.pending_seen += take
        if not self.remaining:
            self._complete_pending(ts, sink)
        return take

    cdef void _start_payload(self, int64_t seen, int64_t remaining) noexcept:
        self.pending = self.unit
        self.pieces, self.pending_pieces = self.pending_pieces, self.pieces
        self.has_pending = True
        self.pending_seen = seen
        self.remaining = remaining

    cdef int _complete_pending(self, int64_t ts, UnitSink sink) except -1:
        self.remaining = 0
        self.bytes_parsed += self.pending_seen
        self.pending_seen = 0
        if self.has_pending:
            self.has_pending = False
            self.pending.end_ns = ts
            self._emit(&self.pending, self.pending_pieces, sink)
        return 0

    cdef inline int _emit(self, Unit* unit, UnitBytes pieces, UnitSink sink) except -1:
        if unit.is_request:
            sink.on_request(unit, pieces)
        else:
            sink.on_response(unit, pieces)
        return 0

    cdef inline void _skip_seen(self, int64_t length) noexcept:
        self.skip += length
        self.bytes_skipped += length

    cdef inline void _flush_skip(self, UnitSink sink) noexcept:
        if self.skip:
            self._skipped(sink)
            self.skip = 0

    cdef inline void _lose_sync(self) noexcept:
        if self.synced:
            self.synced = False
            self.resyncs += 1

    cdef int _keep_tail(self, const uint8_t* p, Py_ssize_t n) except -1:
        if self.tail_size + n > self.tail_capacity:
            self.tail_capacity = max(256, (self.tail_size + n) * 2)
            self.tail = <uint8_t*>realloc(self.tail, self.tail_capacity)
            if self.tail == NULL:
                raise MemoryError()
        memcpy(self.tail + self.tail_size, p, n)
        self.tail_size += n
