# protocol/meta.py's handlers for the common meta lines (mg, ms, md, ma, mn; VA, HD, EN, NF, NS, EX, MN), rule for
# rule. Base64 keys (the b flag) and me/ME stay with the specification's handlers (LINE_UNHANDLED).

cdef int C_META_SET = _code(Command.META_SET), C_META_DELETE = _code(Command.META_DELETE)
cdef int C_META_NOOP = _code(Command.META_NOOP)


cdef struct MetaFlags:
    bint quiet, base64, valid
    Py_ssize_t opaque  # token index of the last O flag, -1 if none
    Num ttl, flags, delta, first_value
    int mode  # the M flag's mode, upper-cased; -1 if none
    uint64_t letters


cdef void _meta_flags(Tokens t, Py_ssize_t first, MetaFlags* m) noexcept:
    """meta._meta_flags: what the flag tokens from `first` on say."""
    cdef Py_ssize_t i
    cdef const uint8_t* token
    cdef Py_ssize_t n
    cdef Num number
    m.quiet = m.base64 = 0
    m.valid = 1
    m.opaque = -1
    m.ttl = m.flags = m.delta = m.first_value = num_none()
    m.mode = -1
    m.letters = 0
    for i in range(first, t.count):
        token, n = t.at(i), t.lengths[i]
        if 64 <= token[0] < 128:
            m.letters |= 1ull << (token[0] - 64)
        if token[0] == 113:  # q
            m.quiet = 1
        elif token[0] == 79:  # O
            m.opaque = i
        elif token[0] == 98:  # b
            m.base64 = 1
        elif token[0] == 84:  # T
            if parse_integer(token + 1, n - 1, &number):
                m.ttl = number
            else:
                m.valid = 0
        elif token[0] == 70:  # F
            if not (parse_integer(token + 1, n - 1, &number) and kept_client_flags(number, &m.flags)):
                m.valid = 0
        elif token[0] == 77 and n > 1:  # M
            m.mode = token[1] - 32 if 97 <= token[1] <= 122 else token[1]
        elif token[0] == 68 and all_digits(token + 1, n - 1):  # D
            parse_integer(token + 1, n - 1, &m.delta)
        elif token[0] == 74 and all_digits(token + 1, n - 1):  # J
            parse_integer(token + 1, n - 1, &m.first_value)


cdef inline bint _has_letter_bit(uint64_t letters, int letter) noexcept:
    return (letters >> (letter - 64)) & 1


cdef void _meta_effect(int command, MetaFlags* m, Unit* unit) noexcept:
    """meta._meta_effect, into the unit's effect, delta and initial."""
    cdef int effect
    unit.effect = NONE
    unit.delta = unit.initial = num_none()
    if command == C_META_GET:
        unit.effect = C_GAT if m.ttl.present else C_GET
        return
    if command == C_META_SET:
        effect = C_SET
    elif command == C_META_DELETE:
        effect = C_DELETE
    elif command == C_META_ARITHMETIC:
        effect = C_INCR
    else:
        return
    if m.mode >= 0:
        effect = _set_mode(m.mode, effect) if command == C_META_SET else _arithmetic_mode(m.mode, effect)
    if effect == C_SET and _has_letter_bit(m.letters, 67):  # C
        effect = C_CAS
    unit.effect = effect
    if command != C_META_ARITHMETIC:
        return
    unit.delta = m.delta if m.delta.present else num_of(1)
    if unit.delta.huge:
        unit.delta = num_none()
    if _has_letter_bit(m.letters, 78):  # N
        unit.initial = m.first_value if m.first_value.present else num_of(0)
        if unit.initial.huge:
            unit.initial = num_none()


cdef inline int _set_mode(int mode, int otherwise) noexcept:
    if mode == 83:  # S
        return C_SET
    if mode == 69:  # E
        return C_ADD
    if mode == 65:  # A
        return C_APPEND
    if mode == 80:  # P
        return C_PREPEND
    if mode == 82:  # R
        return C_REPLACE
    return otherwise


cdef inline int _arithmetic_mode(int mode, int otherwise) noexcept:
    if mode == 73 or mode == 43:  # I, +
        return C_INCR
    if mode == 68 or mode == 45:  # D, -
        return C_DECR
    return otherwise


cdef void _meta_unit(Unit* unit, int command, MetaFlags* m, int64_t start, int64_t end) noexcept:
    unit.is_request = 1
    unit.protocol = P_META
    unit.command = command
    unit.reply = NONE
    unit.noreply = 0
    unit.quiet = m.quiet
    unit.opaque_kind = 0
    unit.opaque_number = 0
    unit.opcode = -1
    unit.letters = m.letters
    unit.keys = 0
    unit.value_length = unit.flags = unit.ttl = unit.cas = num_none()
    unit.start_ns = start
    unit.end_ns = end
    _meta_effect(command, m, unit)


cdef int meta_request(Tokens t, Unit* unit, UnitBytes pieces, int64_t start, int64_t end) except -1:
    cdef MetaFlags m
    cdef int command
    cdef const uint8_t* w = t.at(0)
    if t.lengths[0] != 2 or w[0] != 109:  # m?
        return LINE_UNHANDLED
    if w[1] == 110:  # mn
        _meta_flags(t, t.count, &m)
        _meta_unit(unit, C_META_NOOP, &m, start, end)
        unit.quiet = 0
        return LINE_UNIT
    command = (C_META_GET if w[1] == 103 else C_META_SET if w[1] == 115 else C_META_DELETE if w[1] == 100
               else C_META_ARITHMETIC if w[1] == 97 else -1)
    if command < 0:
        return LINE_UNHANDLED  # me, or no meta command: the specification decides
    if t.count < (3 if command == C_META_SET else 2):
        return LINE_INVALID
    _meta_flags(t, 3 if command == C_META_SET else 2, &m)
    if m.base64:
        return LINE_UNHANDLED
    _meta_unit(unit, command, &m, start, end)
    if command == C_META_SET:
        if not _data_length(t, 2, &unit.value_length):
            return LINE_INVALID
        unit.flags = m.flags if m.flags.present else num_of(0)
        unit.ttl = m.ttl if m.ttl.present else num_of(0)
        # A refused key is kept as sent: memcached still reads the data block (meta._meta_set).
    else:
        if t.lengths[1] > KEY_MAX or not m.valid:
            return LINE_INVALID
        unit.ttl = m.ttl
    pieces.add(t.at(1), t.lengths[1])
    unit.keys = 1
    if m.opaque >= 0:
        unit.opaque_kind = 2
        pieces.add(t.at(m.opaque) + 1, t.lengths[m.opaque] - 1)
    return LINE_UNIT


cdef int meta_response(Tokens t, Unit* unit, UnitBytes pieces, int64_t start, int64_t end) except -1:
    cdef const uint8_t* w = t.at(0)
    cdef int reply
    cdef Num length
    if t.lengths[0] != 2:
        return LINE_UNHANDLED
    if w[0] == 86 and w[1] == 65:  # VA
        reply = R_VALUE
    elif w[0] == 77 and w[1] == 78:  # MN
        _text_unit(unit, False, R_NOOP, start, end)
        unit.protocol = P_META
        return LINE_UNIT if t.count == 1 else LINE_INVALID
    else:
        reply = _meta_status_reply(w)
        if reply < 0:
            return LINE_UNHANDLED
    _text_unit(unit, False, reply, start, end)
    unit.protocol = P_META
    if reply == R_VALUE:
        if t.count < 2 or not t.number(1, &length) or length.negative:
            return LINE_INVALID
        unit.value_length = length
    return _meta_return_flags(t, 2 if reply == R_VALUE else 1, unit, pieces)


cdef int _meta_status_reply(const uint8_t* w) noexcept:
    if w[0] == 72 and w[1] == 68:  # HD
        return R_HD
    if w[0] == 69 and w[1] == 78:  # EN
        return R_MISS
    if w[0] == 78 and w[1] == 70:  # NF
        return R_NOT_FOUND
    if w[0] == 78 and w[1] == 83:  # NS
        return R_NOT_STORED
    if w[0] == 69 and w[1] == 88:  # EX
        return R_EXISTS
    return -1


cdef int _meta_return_flags(Tokens t, Py_ssize_t first, Unit* unit, UnitBytes pieces) except -1:
    """meta._meta_return_flags: the key (k), client flags (f) and opaque (O) a reply returns."""
    cdef Py_ssize_t i, key = -1, opaque = -1
    cdef const uint8_t* token
    for i in range(first, t.count):
        token = t.at(i)
        if token[0] == 79:  # O
            opaque = i
        elif token[0] == 107:  # k
            key = i
        elif token[0] == 98:  # b: a base64 key, for the specification
            return LINE_UNHANDLED
        elif token[0] == 102 and not parse_integer(token + 1, t.lengths[i] - 1, &unit.flags):  # f
            return LINE_INVALID
        elif token[0] == 99 and all_digits(token + 1, t.lengths[i] - 1):  # c
            parse_integer(token + 1, t.lengths[i] - 1, &unit.cas)
    if key >= 0:
        pieces.add(t.at(key) + 1, t.lengths[key] - 1)
        unit.keys = 1
    if opaque >= 0:
        unit.opaque_kind = 2
        pieces.add(t.at(opaque) + 1, t.lengths[opaque] - 1)
    return LINE_UNIT
