# replay/inflight.py's InFlight, rule for rule: the same response parser as record (a DirectionParser handing its
# units here instead of to a pairer), FIFO attribution, and the tallies in C arrays until collect().

from membench.replay.stats import STATUS_NAMES

cdef Py_ssize_t STATUS_COUNT = len(STATUS_NAMES)
cdef Py_ssize_t REPLY_COUNT = len(REPLIES)
# Replay's statuses are the profile's, then its own (timeout, lost): the profile's codes index them alike.
assert STATUS_NAMES[:len(STATUSES)] == [status.value for status in STATUSES]
cdef int EXPECT_NONE = 0, EXPECT_UNITS = 1, EXPECT_END = 2, EXPECT_NOOP = 3, EXPECT_QUIET = 4
cdef int64_t CAS_NONE = 0


cdef struct Entry:
    int64_t sent_ns
    int64_t due_ns
    int64_t seq
    int64_t number
    int64_t rows
    int64_t units
    int64_t replies
    Py_ssize_t slot
    int expect


cdef class Int64Log:
    """A growing run of int64 values (one slot's latencies), handed over as bytes for numpy."""

    cdef int64_t* values
    cdef Py_ssize_t size, capacity

    def __dealloc__(self):
        free(self.values)

    cdef inline int add(self, int64_t value) except -1:
        if self.size == self.capacity:
            self.capacity = max(1024, self.capacity * 2)
            self.values = <int64_t*>realloc(self.values, self.capacity * sizeof(int64_t))
            if self.values == NULL:
                raise MemoryError()
        self.values[self.size] = value
        self.size += 1
        return 0

    cdef bytes take(self):
        cdef bytes taken = PyBytes_FromStringAndSize(<char*>self.values, self.size * sizeof(int64_t))
        self.size = 0
        return taken


cdef inline int64_t floor_us(int64_t ns) noexcept:
    """ns // 1000 as Python rounds it (towards minus infinity)."""
    cdef int64_t q = ns // 1000
    if ns % 1000 and ns < 0:
        q -= 1
    return q


cdef class ReplyMatcher(UnitSink):
    """See replay/inflight.py: the requests one stream sent and has not seen answered, oldest first."""

    cdef DirectionParser parser
    cdef Entry* ring
    cdef Py_ssize_t head, count, capacity
    cdef Py_ssize_t slots
    cdef int16_t* table  # [slot][reply] -> status
    cdef int16_t* suppressed  # [slot] -> status of a quiet request answered by silence
    cdef int64_t* counts  # [slot][status]
    cdef int64_t* requests  # [slot]
    cdef list latencies, intended  # Int64Log per slot
    cdef bint timed
    cdef object uniques
    cdef int64_t now
    cdef int64_t unexpected
    cdef public int64_t waiting, answered

    def __cinit__(self, list tables, list suppressed, bint timed, uniques):
        cdef Py_ssize_t slot, reply
        self.slots = len(tables)
        self.table = <int16_t*>calloc(max(1, self.slots * REPLY_COUNT), sizeof(int16_t))
        self.suppressed = <int16_t*>calloc(max(1, self.slots), sizeof(int16_t))
        self.counts = <int64_t*>calloc(max(1, self.slots * STATUS_COUNT), sizeof(int64_t))
        self.requests = <int64_t*>calloc(max(1, self.slots), sizeof(int64_t))
        if not (self.table and self.suppressed and self.counts and self.requests):
            raise MemoryError()
        for slot in range(self.slots):
            for reply in range(REPLY_COUNT):
                self.table[slot * REPLY_COUNT + reply] = tables[slot][REPLIES[reply]]
            self.suppressed[slot] = suppressed[slot]
        self.latencies = [Int64Log() for _ in range(self.slots)]
        self.intended = [Int64Log() for _ in range(self.slots)]
        self.timed = timed
        self.uniques = uniques
        self.parser = DirectionParser(False, False)
        self.answered = -1

    def __dealloc__(self):
        free(self.ring)
        free(self.table)
        free(self.suppressed)
        free(self.counts)
        free(self.requests)

    def sent(self, group, int64_t now, int64_t due):
        self._sent(<tuple>group, now, due)

    def admit(self, GroupBlock chunk, Py_ssize_t index, Py_ssize_t budget, int64_t now, int64_t depth,
              list streams, list payloads):
        """See InFlight.admit; the payloads admitted go out as one slice of the block's."""
        cdef const int64_t* row
        cdef Py_ssize_t first = index, pair
        cdef ReplyMatcher other
        cdef bint blocked
        cdef int64_t start, end
        while budget and index < chunk.count:
            row = chunk.table + index * B_FIELDS
            if row[B_CAS] != CAS_NONE or row[B_EXPECT] == EXPECT_NONE:
                break
            if self.waiting >= (depth if depth else row[B_OUTSTANDING] + 1):
                break
            blocked = False
            for pair in range(chunk.after_start(index), row[B_AFTER_END]):
                other = <ReplyMatcher?>streams[<Py_ssize_t>chunk.after[2 * pair]]
                if other.answered < chunk.after[2 * pair + 1]:
                    blocked = True
                    break
            if blocked:
                break
            self._sent_row(row, now, now)
            index += 1
            budget -= 1
        if index > first:
            start, end = chunk.payload_start(first), chunk.payload_start(index)
            payloads.append(PyBytes_FromStringAndSize(PyBytes_AS_STRING(chunk.payloads) + start, end - start))
        return index

    cdef int _sent(self, tuple fields, int64_t now, int64_t due) except -1:
        """A Group sent by the link itself (open loop, cas, the drain noop): its fields as a GroupBlock row. By
        position, not by name: a NamedTuple's attribute is a Python-level lookup (inflight.py checks the order)."""
        cdef int64_t row[B_FIELDS]
        row[B_SLOT] = fields[1]
        row[B_ROWS] = fields[2]
        row[B_EXPECT] = fields[3]
        row[B_UNITS] = fields[4]
        row[B_SEQ] = fields[7]
        row[B_NUMBER] = fields[8]
        self._sent_row(row, now, due)

    cdef int _sent_row(self, const int64_t* row, int64_t now, int64_t due) except -1:
        cdef Entry entry
        entry.slot = row[B_SLOT]
        entry.rows = row[B_ROWS]
        entry.expect = <int>row[B_EXPECT]
        entry.units = row[B_UNITS]
        entry.seq = row[B_SEQ]
        entry.number = row[B_NUMBER]
        entry.sent_ns = now
        entry.due_ns = due
        entry.replies = 0
        self._push(&entry)
        if entry.expect != EXPECT_QUIET:
            self.waiting += 1

    def receive(self, bytes data, int64_t now):
        self.now = now
        self.parser.receive(<const uint8_t*><const char*>data, len(data), now, self)
        if self.parser.bytes_skipped:
            self.unexpected += 1
            return False
        return True

    def answer(self, int64_t number):
        self._answer(number)

    def abandon(self, int status):
        cdef Entry* entry
        cdef int64_t answered
        while self.count:
            entry = &self.ring[self.head]
            if entry.slot >= 0:
                answered = entry.replies if entry.expect == EXPECT_UNITS or entry.expect == EXPECT_NOOP else 0
                self.counts[entry.slot * STATUS_COUNT + status] += entry.rows - answered
            self._answer(entry.number)
            self._pop()
        self.waiting = 0

    def drop(self):
        while self.count:
            self._answer(self.ring[self.head].number)
            self._pop()
        self.waiting = 0

    def reconnected(self):
        self.parser = DirectionParser(False, False)

    def pending(self):
        return self.count

    def oldest_sent_ns(self):
        if not self.count:
            raise IndexError("nothing in flight")
        return self.ring[self.head].sent_ns

    def collect(self, meter):
        cdef Py_ssize_t slot, status
        cdef list counts = meter.counts, requests = meter.requests
        cdef list row
        for slot in range(self.slots):
            row = counts[slot]
            for status in range(STATUS_COUNT):
                if self.counts[slot * STATUS_COUNT + status]:
                    row[status] += self.counts[slot * STATUS_COUNT + status]
                    self.counts[slot * STATUS_COUNT + status] = 0
            requests[slot] += self.requests[slot]
            self.requests[slot] = 0
            _hand_over(meter.latencies[slot], <Int64Log>self.latencies[slot])
            _hand_over(meter.intended[slot], <Int64Log>self.intended[slot])
        meter.unexpected_replies += self.unexpected
        self.unexpected = 0

    # -- the ring of entries --------------------------------------------------------------------------------

    cdef int _push(self, Entry* entry) except -1:
        cdef Entry* grown
        cdef Py_ssize_t i
        if self.count == self.capacity:
            grown = <Entry*>malloc(max(16, self.capacity * 2) * sizeof(Entry))
            if grown == NULL:
                raise MemoryError()
            for i in range(self.count):
                grown[i] = self.ring[(self.head + i) % self.capacity]
            free(self.ring)
            self.ring = grown
            self.head = 0
            self.capacity = max(16, self.capacity * 2)
        self.ring[(self.head + self.count) % self.capacity] = entry[0]
        self.count += 1
        return 0

    cdef inline void _pop(self) noexcept:
        self.head = (self.head + 1) % self.capacity
        self.count -= 1

    cdef inline void _answer(self, int64_t number) noexcept:
        if number > self.answered:
            self.answered = number

    # -- attribution: InFlight._on_reply and what it calls --------------------------------------------------

    cdef void on_reply_hole(self) noexcept:
        pass  # only skipped bytes make a hole in a reply stream, and receive() reports those

    cdef int on_response(self, Unit* unit, UnitBytes pieces) except -1:
        cdef Entry* entry
        cdef int reply = unit.reply
        cdef bint own
        if self.parser.bytes_skipped:
            return 0  # after garbage nothing is attributed (InFlight.receive stops at the first Skipped)
        if unit.cas.present and not unit.cas.huge and unit.keys and self.uniques is not None:
            self.uniques[PyBytes_FromStringAndSize(<char*>pieces.piece(0), pieces.piece_length(0))] = \
                unit.cas.magnitude
        while self.count:
            entry = &self.ring[self.head]
            if entry.expect == EXPECT_QUIET:
                own = _opaque_number(unit, pieces) == entry.seq
                self._answer(entry.number)
                self.counts[entry.slot * STATUS_COUNT
                            + (self.table[entry.slot * REPLY_COUNT + reply] if own else self.suppressed[entry.slot])
                            ] += entry.rows
                self._record(entry)
                self._pop()
                if own:
                    return 0
                continue
            if entry.expect == EXPECT_UNITS:
                if entry.slot >= 0:
                    self.counts[entry.slot * STATUS_COUNT + self.table[entry.slot * REPLY_COUNT + reply]] += (
                        1 if entry.units > 1 else entry.rows)
                entry.replies += 1
                if entry.replies >= entry.units:
                    self._close(entry)
            elif entry.expect == EXPECT_NOOP:
                if reply == R_NOOP:
                    self.counts[entry.slot * STATUS_COUNT + self.suppressed[entry.slot]] += entry.rows - entry.replies
                    self._close(entry)
                else:
                    self.counts[entry.slot * STATUS_COUNT + self.table[entry.slot * REPLY_COUNT + reply]] += 1
                    entry.replies += 1
            elif reply == R_VALUE:
                entry.replies += 1
            else:
                self._on_end(entry, reply)
            return 0
        self.unexpected += 1

    cdef int _on_end(self, Entry* entry, int reply) except -1:
        cdef int64_t* counts
        if reply == R_STAT:
            return 0
        counts = self.counts + entry.slot * STATUS_COUNT
        if reply != R_END:
            counts[self.table[entry.slot * REPLY_COUNT + reply]] += entry.rows
        elif entry.units:
            counts[S_OK] += entry.rows
        else:
            counts[S_HIT] += entry.replies
            counts[S_MISS] += entry.rows - entry.replies
        self._close(entry)

    cdef int _close(self, Entry* entry) except -1:
        self.waiting -= 1
        self._record(entry)
        self._answer(entry.number)
        self._pop()

    cdef int _record(self, Entry* entry) except -1:
        if entry.slot >= 0:
            (<Int64Log>self.latencies[entry.slot]).add(floor_us(self.now - entry.sent_ns))
            self.requests[entry.slot] += 1
            if self.timed:
                (<Int64Log>self.intended[entry.slot]).add(floor_us(self.now - entry.due_ns))


cdef int64_t _opaque_number(Unit* unit, UnitBytes pieces) noexcept:
    """inflight._opaque_number: the binary header's opaque, or a meta O token's digits; -1 for none."""
    cdef Num number
    cdef Py_ssize_t at
    if unit.opaque_kind == 1:
        return unit.opaque_number
    if unit.opaque_kind == 2:
        at = pieces.pieces - 1
        if (all_digits(pieces.piece(at), pieces.piece_length(at))
                and parse_integer(pieces.piece(at), pieces.piece_length(at), &number)
                and num_in_int64(number)):
            return <int64_t>number.magnitude
    return -1


cdef int _hand_over(list chunks, Int64Log log) except -1:
    if log.size:
        chunks.append(np.frombuffer(log.take(), np.int64))
