# binary.py's _PacketParser: 24-byte headers, values counted down, heads continued across chunks, header scanning.

cdef inline uint32_t _be16(const uint8_t* p) noexcept:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline uint32_t _be32(const uint8_t* p) noexcept:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t _be64(const uint8_t* p) noexcept:
    return (<uint64_t>_be32(p) << 32) | _be32(p + 4)


cdef int receive_packets(DirectionParser p, const uint8_t* data, Py_ssize_t size, int64_t ts,
                         UnitSink sink) except -1:
    cdef Py_ssize_t pos = 0, tail_length, total, head
    cdef int64_t tail_ts = p.tail_ts, start
    cdef const uint8_t* h
    cdef uint64_t body
    if p.remaining:
        pos = p._continue_payload(size, ts, sink)
    tail_length = p.tail_size
    if tail_length:
        # A head continues here (never while a payload is pending): joined with this chunk, the loop stays simple.
        if tail_length + size > p.joined_capacity:
            p.joined_capacity = (tail_length + size) * 2
            p.joined = <uint8_t*>realloc(p.joined, p.joined_capacity)
            if p.joined == NULL:
                raise MemoryError()
        memcpy(p.joined, p.tail, tail_length)
        memcpy(p.joined + tail_length, data, size)
        data = p.joined
        size += tail_length
        p.tail_size = 0
    while pos < size:
        start = tail_ts if pos < tail_length else ts
        if size - pos < HEADER_SIZE:
            p._keep_tail(data + pos, size - pos)
            p.tail_ts = start
            break
        h = data + pos
        body = _be32(h + 8)
        if not p.synced or h[0] != p.magic or h[4] + _be16(h + 2) > body or body > BODY_MAX:
            pos = _resync(p, data, size, pos, tail_length, tail_ts, ts, sink)
            continue
        total = HEADER_SIZE + body
        head = HEADER_SIZE + h[4] + _be16(h + 2)
        if pos + total <= size:
            p.bytes_parsed += total
            _packet_unit(p, h, start, ts)
            p._emit(&p.unit, p.pieces, sink)
            pos += total
        elif pos + head <= size:
            _packet_unit(p, h, start, ts)
            p._start_payload(size - pos, pos + total - size)
            break
        else:
            p._keep_tail(data + pos, size - pos)
            p.tail_ts = start
            break
    return 0


cdef Py_ssize_t _resync(DirectionParser p, const uint8_t* data, Py_ssize_t size, Py_ssize_t pos,
                        Py_ssize_t tail_length, int64_t tail_ts, int64_t ts, UnitSink sink) except -1:
    """Skip to the next strictly plausible header after `pos`, or keep a possible header's prefix as tail."""
    cdef Py_ssize_t candidate = pos
    cdef const uint8_t* found
    if p.synced:
        p.errors += 1
        p._lose_sync()
        candidate = pos + 1
    while True:
        found = <const uint8_t*>memchr(data + candidate, p.magic, size - candidate) if candidate < size else NULL
        if found == NULL:
            p._skip_seen(size - pos)
            return size
        candidate = found - data
        if size - candidate < HEADER_SIZE:
            p._skip_seen(candidate - pos)
            p._keep_tail(data + candidate, size - candidate)
            p.tail_ts = tail_ts if candidate < tail_length else ts
            return size
        if _plausible(p, data + candidate):
            p._skip_seen(candidate - pos)
            p._flush_skip(sink)
            p.synced = True
            return candidate
        candidate += 1


cdef bint _plausible(DirectionParser p, const uint8_t* h) noexcept:
    """binary._plausible_request / _plausible_response: the strict checks a resync demands."""
    cdef int opcode = h[1], family = OP_FAMILY[h[1]], extras = h[4]
    cdef uint32_t key_length = _be16(h + 2), status = _be16(h + 6), body = _be32(h + 8)
    if h[0] != p.magic or not OP_KNOWN[opcode] or h[5] != 0:
        return False
    if p.is_request:
        if extras >= 32 or not (OP_EXTRAS[opcode] >> extras) & 1:
            return False
        if OP_KEYED[opcode] and not 0 < key_length <= KEY_MAX:
            return False
        return (family == FAMILY_STORE or family == FAMILY_APPEND or body == key_length + extras
                or OP_COMMAND[opcode] == C_OTHER)
    if key_length > KEY_MAX:
        return False
    if status != 0 and status != 1 and ERROR_STATUS_REPLY[status] == NONE:
        return False
    return extras == (4 if status == 0 and (family == FAMILY_GET or family == FAMILY_GAT) else 0)


cdef int _packet_unit(DirectionParser p, const uint8_t* h, int64_t start, int64_t end) except -1:
    """binary.py's _unit: the Request or Response of the packet whose header is at `h` (extras and key follow)."""
    cdef int opcode = h[1], family = OP_FAMILY[h[1]], extras = h[4], reply
    cdef uint32_t key_length = _be16(h + 2), status = _be16(h + 6), body = _be32(h + 8), ttl
    cdef const uint8_t* x = h + HEADER_SIZE
    cdef Unit* unit = &p.unit
    cdef bint is_request = p.is_request
    p.pieces.reset()
    _text_unit(unit, is_request, OP_COMMAND[opcode] if is_request else R_OTHER, start, end)
    unit.protocol = P_BINARY
    unit.opaque_kind = 1
    unit.opaque_number = _be32(h + 12)
    unit.opcode = opcode
    if OP_KEYED[opcode] and key_length:
        p.pieces.add(x + extras, key_length)
        unit.keys = 1
    if is_request:
        unit.quiet = OP_QUIET[opcode]
        if family == FAMILY_STORE and extras == 8:
            unit.flags = num_of(_be32(x))
            unit.ttl = num_of(_be32(x + 4))
            unit.value_length = num_of(body - extras - key_length)
        elif family == FAMILY_APPEND:
            unit.value_length = num_of(body - extras - key_length)
        elif family == FAMILY_ARITH and extras == 20:
            unit.delta = num_of(_be64(x))
            ttl = _be32(x + 16)
            unit.ttl = num_of(ttl)
            if ttl != 0xFFFFFFFF:
                unit.initial = num_of(_be64(x + 8))
        elif (family == FAMILY_TOUCH or family == FAMILY_GAT) and extras == 4:
            unit.ttl = num_of(_be32(x))
        if _be64(h + 16) and (unit.command == C_SET or unit.command == C_REPLACE):
            unit.command = C_CAS  # a binary set or replace with a unique is a compare-and-swap
        return 0
    if status == 0:
        reply = SUCCESS_BY_FAMILY[family]
        if reply == R_VALUE:
            unit.value_length = num_of(body - extras - key_length)
            if extras == 4:
                unit.flags = num_of(_be32(x))
        elif reply == NONE:
            if OP_COMMAND[opcode] == C_STATS:
                reply = R_STAT if key_length else R_END
            else:
                reply = SUCCESS_BY_COMMAND[OP_COMMAND[opcode]]
                if reply == NONE:
                    reply = R_OTHER
    elif status == 1:
        reply = R_MISS if family == FAMILY_GET or family == FAMILY_GAT else R_NOT_FOUND
    else:
        reply = ERROR_STATUS_REPLY[status]
        if reply == NONE:
            reply = R_SERVER_ERROR
    unit.reply = reply
    if _be64(h + 16):
        unit.cas = num_of(_be64(h + 16))
