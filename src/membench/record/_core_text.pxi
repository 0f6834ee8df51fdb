# What a text line means, for the commands and replies that make up nearly all traffic: text_commands.py's
# handlers, copied rule for rule. Every other line (meta commands, stats, version, gat, errors, ...) is handed to
# the specification's own handler, so the twin decides nothing on its own for those.

from libc.string cimport memcmp

from membench.protocol.text import REQUEST_HANDLERS, RESPONSE_HANDLERS, words

cdef extern from *:
    """
    /* Where the first space lies in p[0..n) (n if none), eight bytes at a time: XOR with spaces turns a space into
       a zero byte, and the lowest byte flagged by the classic has-zero test (w - 0x01..01) & ~w & 0x80..80 is the
       first zero (a borrow only flags bytes above a zero). Keys with control bytes (memcaslap's) take no slower
       path. */
    static Py_ssize_t mb_first_space(const uint8_t *p, Py_ssize_t n) {
        Py_ssize_t i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            w ^= 0x2020202020202020ULL;
            w = (w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL;
            if (w)
                return i + (__builtin_ctzll(w) >> 3);
        }
        for (; i < n; i++)
            if (p[i] == 0x20)
                return i;
        return n;
    }
    """
    Py_ssize_t mb_first_space(const uint8_t* p, Py_ssize_t n) nogil

cdef Py_ssize_t KEY_MAX = 250
cdef uint64_t INT32_MAX = 0x7FFFFFFF
cdef enum:
    LINE_INVALID = 0  # memcached would refuse the line (the handler's None)
    LINE_UNIT = 1
    LINE_UNHANDLED = 2  # not a word the twin handles: ask the specification


@cython.final
cdef class Tokens:
    """The words of one line, as text.words cuts them: at spaces only."""

    cdef Py_ssize_t* starts
    cdef Py_ssize_t* lengths
    cdef Py_ssize_t count, capacity
    cdef const uint8_t* line

    def __cinit__(self):
        self.capacity = 8
        self.starts = <Py_ssize_t*>realloc(NULL, self.capacity * sizeof(Py_ssize_t))
        self.lengths = <Py_ssize_t*>realloc(NULL, self.capacity * sizeof(Py_ssize_t))
        if self.starts == NULL or self.lengths == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.starts)
        free(self.lengths)

    cdef int split(self, const uint8_t* line, Py_ssize_t n) except -1:
        cdef Py_ssize_t i = 0, start
        self.line = line
        self.count = 0
        while True:
            while i < n and line[i] == 32:
                i += 1
            if i >= n:
                return 0
            start = i
            i += mb_first_space(line + i, n - i)
            if self.count == self.capacity:
                self.capacity *= 2
                self.starts = <Py_ssize_t*>realloc(self.starts, self.capacity * sizeof(Py_ssize_t))
                self.lengths = <Py_ssize_t*>realloc(self.lengths, self.capacity * sizeof(Py_ssize_t))
                if self.starts == NULL or self.lengths == NULL:
                    raise MemoryError()
            self.starts[self.count] = start
            self.lengths[self.count] = i - start
            self.count += 1

    cdef inline const uint8_t* at(self, Py_ssize_t i) noexcept:
        return self.line + self.starts[i]

    cdef inline bint is_word(self, Py_ssize_t i, const char* word, Py_ssize_t n) noexcept:
        return self.lengths[i] == n and memcmp(self.line + self.starts[i], word, n) == 0

    cdef inline bint number(self, Py_ssize_t i, Num* out) noexcept:
        return parse_integer(self.at(i), self.lengths[i], out)


cdef inline bint is_printable(const uint8_t* line, Py_ssize_t n) noexcept nogil:
    """text._is_printable: no control byte but tab (a final \\r is the line ending)."""
    cdef Py_ssize_t i
    if n and line[n - 1] == 13:
        n -= 1
    for i in range(n):
        if line[i] < 9 or 10 <= line[i] < 32 or line[i] == 127:
            return False
    return True


cdef inline void _text_unit(Unit* unit, bint is_request, int code, int64_t start, int64_t end) noexcept:
    unit.is_request = is_request
    unit.protocol = P_TEXT
    unit.command = code if is_request else NONE
    unit.reply = NONE if is_request else code
    unit.effect = NONE
    unit.noreply = unit.quiet = 0
    unit.opaque_kind = 0
    unit.opaque_number = 0
    unit.opcode = -1
    unit.letters = 0
    unit.keys = 0
    unit.value_length = unit.flags = unit.ttl = unit.delta = unit.initial = unit.cas = num_none()
    unit.start_ns = start
    unit.end_ns = end


cdef int _key(Tokens t, Py_ssize_t i, Unit* unit, UnitBytes pieces) except -1:
    if t.lengths[i] > KEY_MAX:
        return LINE_INVALID
    pieces.add(t.at(i), t.lengths[i])
    unit.keys += 1
    return LINE_UNIT


cdef bint _data_length(Tokens t, Py_ssize_t i, Num* out) noexcept:
    """text_commands.data_length: the low 32 bits of an int64, as memcached's int32 reads it."""
    cdef Num n
    cdef int64_t low
    if not t.number(i, &n) or not num_in_int64(n):
        return False
    low = <int64_t>(<uint32_t>(n.magnitude if not n.negative else (~n.magnitude + 1)))
    if low >= (1LL << 31):
        low -= 1LL << 32
    if not 0 <= low <= <int64_t>INT32_MAX - 2:
        return False
    out[0] = num_of(<uint64_t>low)
    return True


cdef bint _client_flags(Tokens t, Py_ssize_t i, Num* out) noexcept:
    cdef Num n
    return t.number(i, &n) and kept_client_flags(n, out)


cdef bint kept_client_flags(Num n, Num* out) noexcept:
    """text_commands.client_flags, on the number read: strtoul's 64 bits, a `-` refused if it wraps to a negative
    int64, the low 32 bits kept."""
    cdef uint64_t wrapped
    if n.huge:
        return False
    wrapped = (~n.magnitude + 1) if n.negative else n.magnitude
    if n.negative and wrapped > INT64_MAX:
        return False
    out[0] = num_of(wrapped & UINT32_MAX)
    return True


cdef int text_request(Tokens t, Unit* unit, UnitBytes pieces, int64_t start, int64_t end) except -1:
    cdef Py_ssize_t n = t.count, i, fixed
    cdef Num number, cas
    cdef int command
    pieces.reset()
    if t.is_word(0, b"get", 3) or t.is_word(0, b"gets", 4):
        _text_unit(unit, True, C_GET if t.lengths[0] == 3 else C_GETS, start, end)
        if n < 2:
            return LINE_INVALID
        for i in range(1, n):
            if _key(t, i, unit, pieces) == LINE_INVALID:
                return LINE_INVALID
        return LINE_UNIT
    command = _storage_command(t)
    if command >= 0:
        _text_unit(unit, True, command, start, end)
        fixed = 6 if command == C_CAS else 5
        if n != fixed and n != fixed + 1:
            return LINE_INVALID
        if not t.number(3, &unit.ttl):
            return LINE_INVALID
        if fixed == 6 and not t.number(5, &cas):
            return LINE_INVALID
        if (not _client_flags(t, 2, &unit.flags) or not _data_length(t, 4, &unit.value_length)
                or not num_in_int64(unit.ttl) or t.lengths[1] > KEY_MAX):
            return LINE_INVALID
        unit.noreply = n > fixed and t.is_word(n - 1, b"noreply", 7)
        return _key(t, 1, unit, pieces)
    if t.is_word(0, b"delete", 6):
        _text_unit(unit, True, C_DELETE, start, end)
        if n == 2:
            pass
        elif n == 3 and (t.is_word(2, b"0", 1) or t.is_word(2, b"noreply", 7)):
            unit.noreply = t.is_word(2, b"noreply", 7)
        elif n == 4 and t.is_word(2, b"0", 1) and t.is_word(3, b"noreply", 7):
            unit.noreply = 1
        else:
            return LINE_INVALID
        return _key(t, 1, unit, pieces)
    if t.is_word(0, b"incr", 4) or t.is_word(0, b"decr", 4):
        _text_unit(unit, True, C_INCR if t.at(0)[0] == 105 else C_DECR, start, end)
        if (n != 3 and n != 4) or not all_digits(t.at(2), t.lengths[2]) or t.lengths[1] > KEY_MAX:
            return LINE_INVALID
        unit.noreply = n == 4 and t.is_word(3, b"noreply", 7)
        t.number(2, &number)
        unit.delta = number if not number.huge else num_none()
        return _key(t, 1, unit, pieces)
    if t.is_word(0, b"touch", 5):
        _text_unit(unit, True, C_TOUCH, start, end)
        if (n != 3 and n != 4) or t.lengths[1] > KEY_MAX or not t.number(2, &unit.ttl):
            return LINE_INVALID
        unit.noreply = n == 4 and t.is_word(3, b"noreply", 7)
        return _key(t, 1, unit, pieces)
    return LINE_UNHANDLED


cdef int _storage_command(Tokens t) noexcept:
    if t.is_word(0, b"set", 3):
        return C_SET
    if t.is_word(0, b"add", 3):
        return C_ADD
    if t.is_word(0, b"replace", 7):
        return C_REPLACE
    if t.is_word(0, b"append", 6):
        return C_APPEND
    if t.is_word(0, b"prepend", 7):
        return C_PREPEND
    if t.is_word(0, b"cas", 3):
        return C_CAS
    return -1


cdef int text_response(Tokens t, Unit* unit, UnitBytes pieces, int64_t start, int64_t end,
                       bint strict) except -1:
    cdef Py_ssize_t n = t.count
    cdef int reply
    pieces.reset()
    if t.is_word(0, b"VALUE", 5):
        _text_unit(unit, False, R_VALUE, start, end)
        if n != 4 and n != 5:
            return LINE_INVALID
        if not t.number(2, &unit.flags) or not t.number(3, &unit.value_length):
            return LINE_INVALID
        if unit.value_length.negative or unit.flags.negative:
            return LINE_INVALID
        if n == 5 and all_digits(t.at(4), t.lengths[4]):
            parse_integer(t.at(4), t.lengths[4], &unit.cas)
        pieces.add(t.at(1), t.lengths[1])
        unit.keys = 1
        return LINE_UNIT
    reply = _bare_reply(t)
    if reply >= 0:
        _text_unit(unit, False, reply, start, end)
        return LINE_UNIT if n == 1 else LINE_INVALID
    if n == 1 and not strict and all_digits(t.at(0), t.lengths[0]):
        # text.TextResponseParser._unknown_word: an incr/decr result, trusted only in sync
        _text_unit(unit, False, R_NUMBER, start, end)
        return LINE_UNIT
    return LINE_UNHANDLED


cdef int _bare_reply(Tokens t) noexcept:
    cdef Py_ssize_t n = t.lengths[0]
    cdef const uint8_t* w = t.at(0)
    if n == 3 and memcmp(w, b"END", 3) == 0:
        return R_END
    if n == 6 and memcmp(w, b"STORED", 6) == 0:
        return R_STORED
    if n == 10 and memcmp(w, b"NOT_STORED", 10) == 0:
        return R_NOT_STORED
    if n == 6 and memcmp(w, b"EXISTS", 6) == 0:
        return R_EXISTS
    if n == 9 and memcmp(w, b"NOT_FOUND", 9) == 0:
        return R_NOT_FOUND
    if n == 7 and memcmp(w, b"DELETED", 7) == 0:
        return R_DELETED
    if n == 7 and memcmp(w, b"TOUCHED", 7) == 0:
        return R_TOUCHED
    if n == 2 and memcmp(w, b"OK", 2) == 0:
        return R_OK
    return -1


cdef int spec_line(bytes line, bint is_request, bint strict, Unit* unit, UnitBytes pieces,
                   int64_t start, int64_t end) except -1:
    """A line the twin does not handle itself, decided by the specification's handler for its first word."""
    tokens = words(line)
    handlers = REQUEST_HANDLERS if is_request else RESPONSE_HANDLERS
    entry = handlers.get(tokens[0])
    if entry is None:
        return LINE_INVALID  # the bare numbers of responses were handled above; requests have no other form
    event = entry[0](tokens, entry[1], start, end)
    if event is None:
        return LINE_INVALID
    unit_from_python(event, unit, pieces, is_request)
    return LINE_UNIT


cdef void other_unit(Tokens t, bint is_request, Unit* unit, UnitBytes pieces, int64_t start, int64_t end) noexcept:
    """text._other: a printable line that is no valid command or reply still takes its ERROR reply's place."""
    pieces.reset()
    _text_unit(unit, is_request, C_OTHER if is_request else R_OTHER, start, end)
    if is_request:
        unit.noreply = (t.count > 1 and t.is_word(0, b"cache_memlimit", 14)
                        and t.is_word(t.count - 1, b"noreply", 7))
