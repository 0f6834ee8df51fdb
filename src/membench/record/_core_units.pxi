# The compiled form of a parser event (events.py's Request and Response) and of the numbers in it.
#
# A number from the wire may be any size (`touch k 99999999999999999999`), and the specification keeps it exact
# until the row is written, where limits.py fits it to its column. A Num keeps what that fitting needs: the
# magnitude as far as 64 bits go, the sign, and whether it went past 64 bits.

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

cdef uint64_t UINT32_MAX = 0xFFFFFFFFULL
cdef uint64_t INT64_MAX = 0x7FFFFFFFFFFFFFFFULL
# A payload length the stream can never deliver: longer announced lengths frame exactly like this one.
cdef int64_t PAYLOAD_MAX = 1LL << 62


cdef struct Num:
    uint64_t magnitude
    uint8_t present
    uint8_t negative
    uint8_t huge  # beyond 64 bits (magnitude is then meaningless)


cdef inline Num num_none() noexcept nogil:
    cdef Num n
    n.magnitude = 0
    n.present = n.negative = n.huge = 0
    return n


cdef inline Num num_of(uint64_t value) noexcept nogil:
    cdef Num n = num_none()
    n.present = 1
    n.magnitude = value
    return n


cdef inline bint parse_integer(const uint8_t* p, Py_ssize_t n, Num* out) noexcept nogil:
    """text_commands.integer: a sign and decimal digits, nothing else."""
    cdef Py_ssize_t i = 0
    cdef uint64_t value = 0, digit
    out[0] = num_none()
    if n > 0 and (p[0] == 43 or p[0] == 45):
        out.negative = p[0] == 45
        i = 1
    if i == n:
        return False
    while i < n:
        if not 48 <= p[i] <= 57:
            return False
        digit = p[i] - 48
        if not out.huge:
            if value > (0xFFFFFFFFFFFFFFFFULL - digit) // 10:
                out.huge = 1
            else:
                value = value * 10 + digit
        i += 1
    out.present = 1
    out.magnitude = value
    if value == 0:
        out.negative = 0
    return True


cdef inline bint all_digits(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """bytes.isdigit(): ASCII digits, at least one."""
    cdef Py_ssize_t i
    if n == 0:
        return False
    for i in range(n):
        if not 48 <= p[i] <= 57:
            return False
    return True


cdef inline bint num_in_int64(Num n) noexcept nogil:
    if n.huge:
        return False
    return n.magnitude <= INT64_MAX + (1 if n.negative else 0)


cdef inline bint num_in_uint32(Num n) noexcept nogil:
    return not n.huge and (not n.negative or n.magnitude == 0) and n.magnitude <= UINT32_MAX


cdef inline bint num_nonnegative(Num n) noexcept nogil:
    return not n.negative


cdef inline int64_t num_payload(Num n) noexcept nogil:
    """A non-negative length as the framing counts it."""
    if n.huge or n.magnitude > <uint64_t>PAYLOAD_MAX:
        return PAYLOAD_MAX
    return <int64_t>n.magnitude


cdef inline Num num_from_python(object value) except *:
    if value is None:
        return num_none()
    cdef Num n = num_none()
    n.present = 1
    if value < 0:
        n.negative = 1
        value = -value
    if value > 0xFFFFFFFFFFFFFFFF:
        n.huge = 1
    else:
        n.magnitude = value
    return n


cdef struct Unit:
    uint8_t is_request
    uint8_t protocol
    uint8_t command  # requests
    uint8_t reply  # responses
    uint8_t effect  # NONE when absent
    uint8_t noreply
    uint8_t quiet
    uint8_t opaque_kind  # 0: none, 1: a binary opaque (opaque_number), 2: a meta O token (bytes after the keys)
    uint32_t opaque_number
    int16_t opcode  # binary: the packet's opcode, which a reply repeats from its request; -1 otherwise
    uint64_t letters  # bit c - 64 for every meta flag letter c in 64..127
    uint32_t keys  # requests: how many keys; responses: 1 if the reply names a key
    Num value_length
    Num flags
    Num ttl
    Num delta
    Num initial
    Num cas  # responses: the item's CAS unique, where the reply shows it
    int64_t start_ns
    int64_t end_ns


@cython.final
cdef class UnitBytes:
    """The keys (and meta opaque token) of the unit being parsed: copied, since its bytes may span chunks.

    Piece i is bytes[offsets[i]:offsets[i + 1]]; keys come first, then the opaque token if the unit has one.
    """

    cdef uint8_t* data
    cdef Py_ssize_t size, capacity
    cdef uint32_t* offsets
    cdef Py_ssize_t pieces, offset_capacity

    def __cinit__(self):
        self.offsets = NULL
        self.data = NULL
        self.size = self.capacity = self.pieces = self.offset_capacity = 0
        self.reset()

    def __dealloc__(self):
        free(self.data)
        free(self.offsets)

    cdef inline int reset(self) except -1:
        self.size = 0
        self.pieces = 0
        self._offset(0)

    cdef int _offset(self, uint32_t value) except -1:
        cdef Py_ssize_t wanted = self.pieces + 1
        if wanted > self.offset_capacity:
            self.offset_capacity = max(4, wanted * 2)
            self.offsets = <uint32_t*>realloc(self.offsets, self.offset_capacity * sizeof(uint32_t))
            if self.offsets == NULL:
                raise MemoryError()
        self.offsets[self.pieces] = value

    cdef int add(self, const uint8_t* p, Py_ssize_t n) except -1:
        if self.size + n > self.capacity:
            self.capacity = max(64, (self.size + n) * 2)
            self.data = <uint8_t*>realloc(self.data, self.capacity)
            if self.data == NULL:
                raise MemoryError()
        memcpy(self.data + self.size, p, n)
        self.size += n
        self.pieces += 1
        self._offset(<uint32_t>self.size)

    cdef inline const uint8_t* piece(self, Py_ssize_t i) noexcept:
        return self.data + self.offsets[i]

    cdef inline Py_ssize_t piece_length(self, Py_ssize_t i) noexcept:
        return self.offsets[i + 1] - self.offsets[i]


cdef class UnitSink:
    """Where a direction parser hands its units: record's pairer, or replay's in-flight matcher."""

    cdef int on_request(self, Unit* unit, UnitBytes pieces) except -1:
        pass

    cdef int on_response(self, Unit* unit, UnitBytes pieces) except -1:
        pass

    cdef void on_reply_hole(self) noexcept:
        pass


cdef int unit_from_python(object event, Unit* unit, UnitBytes pieces, bint is_request) except -1:
    """A Request or Response of the specification's handlers, as a Unit (the rare lines the twin leaves to them)."""
    cdef bytes key
    pieces.reset()
    unit.is_request = is_request
    unit.protocol = PROTOCOLS.index(event.protocol)
    unit.value_length = num_from_python(event.value_length)
    unit.flags = num_from_python(event.flags)
    opaque = event.opaque
    unit.opaque_kind = 0
    unit.opaque_number = 0
    unit.opcode = -1 if event.binary_opcode is None else event.binary_opcode
    if is_request:
        unit.command = COMMANDS.index(event.command)
        unit.reply = NONE
        unit.effect = NONE if event.effect is None else COMMANDS.index(event.effect)
        unit.noreply = event.noreply
        unit.quiet = event.quiet
        unit.letters = 0
        for letter in event.meta_flags:
            if 64 <= letter < 128:
                unit.letters |= 1ull << (letter - 64)
        unit.keys = len(event.keys)
        for key in event.keys:
            pieces.add(key, len(key))
        unit.ttl = num_from_python(event.ttl)
        unit.delta = num_from_python(event.delta)
        unit.initial = num_from_python(event.initial)
    else:
        unit.command = NONE
        unit.reply = REPLIES.index(event.reply)
        unit.effect = NONE
        unit.noreply = unit.quiet = 0
        unit.letters = 0
        unit.keys = 0 if event.key is None else 1
        if event.key is not None:
            key = event.key
            pieces.add(key, len(key))
        unit.ttl = unit.delta = unit.initial = num_none()
    if isinstance(opaque, int):
        unit.opaque_kind = 1
        unit.opaque_number = opaque
    elif opaque is not None:
        unit.opaque_kind = 2
        pieces.add(opaque, len(opaque))
    unit.cas = num_none() if is_request else num_from_python(event.cas)
    unit.start_ns = event.start_ns
    unit.end_ns = event.end_ns
    return 0
