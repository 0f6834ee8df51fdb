# text.py's _LineParser: lines, data blocks counted down, over-long lines dropped, resynchronization.

cdef int receive_lines(DirectionParser p, const uint8_t* data, Py_ssize_t size, int64_t ts,
                       UnitSink sink) except -1:
    cdef Py_ssize_t pos = 0
    cdef const uint8_t* newline
    if p.remaining or p.discarding or p.tail_size:
        pos = _resume(p, data, size, ts, sink)
    while pos < size:
        newline = <const uint8_t*>memchr(data + pos, 10, size - pos)
        if newline == NULL:
            p._keep_tail(data + pos, size - pos)
            p.tail_ts = ts
            _check_tail_bound(p)
            break
        pos = _line(p, data + pos, newline - data - pos, ts, newline - data + 1, size, ts, sink)
        if p.remaining:
            break
    return 0


cdef Py_ssize_t _resume(DirectionParser p, const uint8_t* data, Py_ssize_t size, int64_t ts,
                        UnitSink sink) except -1:
    """Finish what the previous chunk left open; returns where parsing of `data` continues."""
    cdef Py_ssize_t pos = 0, end
    cdef const uint8_t* newline
    if p.remaining:
        pos = p._continue_payload(size, ts, sink)
        if p.remaining:
            return size
    if p.discarding and pos < size:
        newline = <const uint8_t*>memchr(data + pos, 10, size - pos)
        end = size if newline == NULL else newline - data + 1
        p._skip_seen(end - pos)
        p.discarding = newline == NULL
        pos = end
    if p.tail_size and pos < size:
        newline = <const uint8_t*>memchr(data + pos, 10, size - pos)
        if newline == NULL:
            p._keep_tail(data + pos, size - pos)
            _check_tail_bound(p)
            return size
        p._keep_tail(data + pos, newline - data - pos)
        line = (<const char*>p.tail)[:p.tail_size]  # the line outlives the tail, which _line may refill
        p.tail_size = 0
        pos = _line(p, <const uint8_t*><const char*>line, len(line), p.tail_ts, newline - data + 1, size, ts, sink)
        if p.remaining:
            return size
    return pos


cdef Py_ssize_t _line(DirectionParser p, const uint8_t* line, Py_ssize_t n, int64_t start, Py_ssize_t after,
                      Py_ssize_t size, int64_t ts, UnitSink sink) except -1:
    """One complete line, ending just before `after` in the chunk; returns where parsing continues."""
    cdef int result = LINE_INVALID
    cdef bint synced = p.synced
    cdef int64_t length, end
    cdef Py_ssize_t words = n
    cdef const uint8_t* nul
    if n > _LINE_MAX and _too_long(p, line, n):
        _skip_garbage(p, n + 1)
        return after
    if n > 1 and line[n - 1] == 13:  # text.without_ending
        words = n - 1
    if p.is_request:
        # text.TextRequestParser._words: memcached reads a command line up to its first NUL
        nul = <const uint8_t*>memchr(line, 0, words)
        if nul != NULL:
            words = nul - line
    p.tokens.split(line, words)
    if p.tokens.count:
        if p.is_request:
            result = text_request(p.tokens, &p.unit, p.pieces, start, ts)
        else:
            result = text_response(p.tokens, &p.unit, p.pieces, start, ts, not synced)
        if result == LINE_UNHANDLED:
            result = (meta_request(p.tokens, &p.unit, p.pieces, start, ts) if p.is_request
                      else meta_response(p.tokens, &p.unit, p.pieces, start, ts))
        if result == LINE_UNHANDLED:
            result = spec_line((<const char*>line)[:words], p.is_request, not synced, &p.unit, p.pieces, start, ts)
    if result == LINE_INVALID:
        # text._LineParser._stands_for_unit: memcached answers any command line; a reply line must be text
        if synced and (p.is_request or is_printable(line, n)):
            other_unit(p.tokens, p.is_request, &p.unit, p.pieces, start, ts)
        else:
            _skip_garbage(p, n + 1)
            return after
    elif not synced:
        p.synced = True
        p._flush_skip(sink)
    if not p.unit.value_length.present:
        p.bytes_parsed += n + 1
        p._emit(&p.unit, p.pieces, sink)
        return after
    length = num_payload(p.unit.value_length)
    end = after + length + 2
    if end <= size:
        p.bytes_parsed += n + 1 + length + 2
        p._emit(&p.unit, p.pieces, sink)
        return end
    p._start_payload(n + 1 + size - after, end - size)
    return size


cdef void _skip_garbage(DirectionParser p, int64_t length) noexcept:
    if p.synced:
        p.errors += 1
        p._lose_sync()
    p._skip_seen(length)


cdef void _check_tail_bound(DirectionParser p) noexcept:
    if p.tail_size > _LINE_MAX and _too_long(p, p.tail, p.tail_size):
        _skip_garbage(p, p.tail_size)
        p.discarding = True
        p.tail_size = 0


cdef bint _too_long(DirectionParser p, const uint8_t* line, Py_ssize_t n) noexcept:
    return n > _RETRIEVAL_LINE_MAX or not (p.is_request and _retrieval_prefix(line, n))


cdef bint _retrieval_prefix(const uint8_t* line, Py_ssize_t n) noexcept:
    return (n >= 4 and memcmp(line, b"get ", 4) == 0) or (n >= 5 and memcmp(line, b"gets ", 5) == 0)
