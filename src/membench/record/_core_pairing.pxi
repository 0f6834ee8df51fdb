# pairing.py's ConnectionPairer, rule for rule: FIFO matching bent by noreply, quiet commands, opaque tokens and
# holes; one row per key. A pending request keeps its keys (and meta opaque token) in the connection's arena,
# which is emptied whenever nothing is pending and compacted when it would grow while requests stay pending.

cdef struct KeySlot:
    Py_ssize_t offset  # into the arena
    Py_ssize_t length
    uint8_t hit
    Num hit_value_length
    Num hit_flags


cdef struct Pending:
    Unit request
    uint64_t batch
    Py_ssize_t arena_start  # where its bytes begin in the arena
    Py_ssize_t first_slot
    Py_ssize_t opaque_offset
    Py_ssize_t opaque_length
    Py_ssize_t hits
    Py_ssize_t last_hit  # highest key index with a hit, -1 for none
    int64_t reply_ns
    uint8_t replied


cdef class PairingCounters:
    cdef public int64_t requests, operations, unmatched_responses, unanswered_requests, unexpected_values
    cdef public int64_t values_out_of_range
    cdef public uint64_t next_batch

    def __cinit__(self):
        self.next_batch = 1

    def as_dict(self):
        return {"requests": self.requests, "operations": self.operations,
                "unmatched_responses": self.unmatched_responses, "unanswered_requests": self.unanswered_requests,
                "unexpected_values": self.unexpected_values, "values_out_of_range": self.values_out_of_range}


@cython.final
cdef class Pairer(UnitSink):
    cdef uint32_t connection
    cdef PairingCounters counters
    cdef Columns rows
    cdef const KeyedHash* hasher
    cdef MemoSlot* memo  # the pipeline's, NULL unless it remembers keys
    cdef Pending* queue
    cdef Py_ssize_t head, count, capacity
    cdef uint8_t* arena
    cdef Py_ssize_t arena_size, arena_capacity
    cdef KeySlot* slots
    cdef Py_ssize_t slot_count, slot_capacity
    cdef bint after_reply_hole

    def __dealloc__(self):
        free(self.queue)
        free(self.arena)
        free(self.slots)

    cdef inline Pending* at(self, Py_ssize_t i) noexcept:
        return &self.queue[(self.head + i) % self.capacity]

    cdef int on_request(self, Unit* unit, UnitBytes pieces) except -1:
        cdef Pending pending
        self.counters.requests += 1
        pending.request = unit[0]
        pending.batch = self.counters.next_batch
        self.counters.next_batch += 1
        pending.hits = 0
        pending.last_hit = -1
        pending.replied = 0
        pending.reply_ns = 0
        self._keep_bytes(&pending, pieces)
        if unit.noreply or (unit.command == C_QUIT and unit.protocol != P_BINARY):
            self._finish(&pending, S_NOREPLY, False, 0, False)
            self._release(&pending)
        else:
            self._push(&pending)

    cdef void on_reply_hole(self) noexcept:
        self.after_reply_hole = True

    cdef int on_response(self, Unit* response, UnitBytes pieces) except -1:
        cdef Pending* pending = NULL
        cdef Pending* head
        cdef int reply = response.reply, status
        cdef uint64_t command_bit
        if self.count:
            head = self.at(0)
            if ((response.opaque_kind == 0 or _same_opaque(self, head, response, pieces))
                    and self._can_answer(head, response, pieces)):
                pending = head
        if pending == NULL:
            pending = self._owner(response, pieces)
            if pending == NULL:
                self.counters.unmatched_responses += 1
                return 0
        self.after_reply_hole = False
        if not pending.replied:
            pending.replied = 1
            pending.reply_ns = response.start_ns
        command_bit = 1ull << pending.request.command
        if MULTI_UNIT & command_bit and not ERROR_REPLIES & (1u << reply):
            if reply == R_VALUE and pending.request.protocol == P_TEXT:
                self._add_hit(pending, response, pieces)
                return 0
            if reply == R_STAT or reply == R_OTHER:
                return 0
        if GET_FAMILY & command_bit and pending.request.protocol == P_TEXT and not ERROR_REPLIES & (1u << reply):
            status = S_MISS
        elif reply == R_VALUE:
            status = S_OK if pending.request.command == C_META_ARITHMETIC else S_HIT
        elif reply == R_HD:
            status = HD_STATUS[pending.request.command]
        else:
            status = REPLY_STATUS_CODE[reply]
        if status == S_HIT and pending.request.keys:
            self._hit(pending, 0, response)
        self._finish(pending, status, True, pending.reply_ns, False)
        self._pop()

    cdef int close(self) except -1:
        cdef Pending* pending
        while self.count:
            pending = self.at(0)
            if pending.request.quiet:
                self._finish(pending, S_NOREPLY, False, 0, False)
            else:
                self.counters.unanswered_requests += 1
                self._finish(pending, S_UNANSWERED, False, 0, False)
            self._pop()

    cdef Pending* _owner(self, Unit* response, UnitBytes pieces) except? NULL:
        cdef Pending* identified = self._identified(response, pieces)
        cdef Pending* head
        while self.count:
            head = self.at(0)
            if identified != NULL and head != identified:
                self._pass_over(head)
                continue
            if identified != NULL or self._can_answer(head, response, pieces):
                return head
            if head.request.quiet or self.after_reply_hole:
                self._pass_over(head)
                continue
            return NULL
        return NULL

    cdef Pending* _identified(self, Unit* response, UnitBytes pieces) except? NULL:
        cdef Py_ssize_t i
        cdef Pending* pending
        if response.opaque_kind == 0 or response.protocol == P_TEXT:
            return NULL
        for i in range(self.count):
            pending = self.at(i)
            if _same_opaque(self, pending, response, pieces) and self._can_answer(pending, response, pieces):
                return pending
        return NULL

    cdef bint _can_answer(self, Pending* pending, Unit* response, UnitBytes pieces) noexcept:
        cdef Unit* request = &pending.request
        cdef int reply = response.reply, command = request.command
        if request.opcode >= 0 and response.opcode >= 0 and response.opcode != request.opcode:
            return False  # pairing.py: memcached repeats a binary request's opcode in its binary reply
        if ERROR_REPLIES & (1u << reply) or command == C_OTHER:
            return True
        if response.keys and request.keys and not self._has_key(pending, pieces.piece(0), pieces.piece_length(0)):
            return False
        if request.quiet:
            if reply == R_NOOP:
                return False
            if request.protocol == P_META and QUIET_META_COMMANDS & (1ull << command):
                return _quiet_meta_can_answer(request, reply)
        return (ANSWERS[command] >> reply) & 1

    cdef bint _has_key(self, Pending* pending, const uint8_t* key, Py_ssize_t length) noexcept:
        cdef Py_ssize_t i
        cdef KeySlot* slot
        for i in range(pending.request.keys):
            slot = &self.slots[pending.first_slot + i]
            if slot.length == length and memcmp(self.arena + slot.offset, key, length) == 0:
                return True
        return False

    cdef int _pass_over(self, Pending* pending) except -1:
        if pending.request.quiet:
            self._finish(pending, SUPPRESSED[pending.request.command], False, 0, True)
        else:
            self.counters.unanswered_requests += 1
            self._finish(pending, S_UNANSWERED, False, 0, False)
        self._pop()

    cdef void _add_hit(self, Pending* pending, Unit* response, UnitBytes pieces) noexcept:
        cdef Py_ssize_t keys = pending.request.keys, index = -1, i
        cdef KeySlot* slot
        if not response.keys:
            index = pending.hits if pending.hits < keys else -1
        else:
            for i in range(pending.last_hit + 1, keys):
                slot = &self.slots[pending.first_slot + i]
                if (slot.length == pieces.piece_length(0)
                        and memcmp(self.arena + slot.offset, pieces.piece(0), slot.length) == 0):
                    index = i
                    break
        if index < 0:
            self.counters.unexpected_values += 1
        else:
            self._hit(pending, index, response)

    cdef inline void _hit(self, Pending* pending, Py_ssize_t index, Unit* response) noexcept:
        cdef KeySlot* slot = &self.slots[pending.first_slot + index]
        if not slot.hit:
            slot.hit = 1
            pending.hits += 1
        slot.hit_value_length = response.value_length
        slot.hit_flags = response.flags
        if index > pending.last_hit:
            pending.last_hit = index

    cdef int _keep_bytes(self, Pending* pending, UnitBytes pieces) except -1:
        """Copy the request's keys and opaque token into the arena (emptied while nothing is pending)."""
        cdef Py_ssize_t i, keys = pending.request.keys
        if self.count == 0:
            self.arena_size = 0
            self.slot_count = 0
        elif self.arena_size + pieces.size > self.arena_capacity or self.slot_count + keys > self.slot_capacity:
            self._compact()
        self._reserve(pieces.size, keys)
        pending.arena_start = self.arena_size
        pending.first_slot = self.slot_count
        memcpy(self.arena + self.arena_size, pieces.data, pieces.size)
        for i in range(keys):
            self.slots[self.slot_count + i].offset = self.arena_size + pieces.offsets[i]
            self.slots[self.slot_count + i].length = pieces.piece_length(i)
            self.slots[self.slot_count + i].hit = 0
            if self.memo != NULL:
                memo_prefetch(self.memo, pieces.data + pieces.offsets[i], pieces.piece_length(i))
        pending.opaque_offset = self.arena_size + pieces.offsets[keys]
        pending.opaque_length = pieces.size - pieces.offsets[keys]
        self.arena_size += pieces.size
        self.slot_count += keys

    cdef void _compact(self) noexcept:
        cdef Pending* first = self.at(0)
        cdef Py_ssize_t shift = first.arena_start, slot_shift = first.first_slot, i
        cdef Pending* pending
        if shift == 0 and slot_shift == 0:
            return
        memmove(self.arena, self.arena + shift, self.arena_size - shift)
        memmove(self.slots, self.slots + slot_shift, (self.slot_count - slot_shift) * sizeof(KeySlot))
        self.arena_size -= shift
        self.slot_count -= slot_shift
        for i in range(self.slot_count):
            self.slots[i].offset -= shift
        for i in range(self.count):
            pending = self.at(i)
            pending.arena_start -= shift
            pending.opaque_offset -= shift
            pending.first_slot -= slot_shift

    cdef int _reserve(self, Py_ssize_t size, Py_ssize_t keys) except -1:
        if self.arena_size + size > self.arena_capacity:
            self.arena_capacity = max(256, (self.arena_size + size) * 2)
            self.arena = <uint8_t*>realloc(self.arena, self.arena_capacity)
            if self.arena == NULL:
                raise MemoryError()
        if self.slot_count + keys > self.slot_capacity:
            self.slot_capacity = max(8, (self.slot_count + keys) * 2)
            self.slots = <KeySlot*>realloc(self.slots, self.slot_capacity * sizeof(KeySlot))
            if self.slots == NULL:
                raise MemoryError()

    cdef int _push(self, Pending* pending) except -1:
        cdef Pending* grown
        cdef Py_ssize_t i
        if self.count == self.capacity:
            grown = <Pending*>malloc(max(4, self.capacity * 2) * sizeof(Pending))
            if grown == NULL:
                raise MemoryError()
            for i in range(self.count):
                grown[i] = self.at(i)[0]
            free(self.queue)
            self.queue = grown
            self.head = 0
            self.capacity = max(4, self.capacity * 2)
        self.queue[(self.head + self.count) % self.capacity] = pending[0]
        self.count += 1

    cdef inline void _pop(self) noexcept:
        self.head = (self.head + 1) % self.capacity
        self.count -= 1

    cdef inline void _release(self, Pending* pending) noexcept:
        """A request finished without being queued: its bytes were the arena's last ones."""
        self.arena_size = pending.arena_start
        self.slot_count = pending.first_slot

    cdef int _finish(self, Pending* pending, int status, bint replied, int64_t reply_ns,
                      bint suppressed) except -1:
        """One row per key; in a multi-get, keys with a VALUE are hits and the rest keep `status`."""
        cdef Unit* request = &pending.request
        cdef Fitted fitted
        cdef Fitted key_fitted
        cdef Py_ssize_t i, row
        cdef int64_t waited
        cdef KeySlot* slot
        fitted.latency = num_none()
        if replied and not suppressed:
            waited = reply_ns - request.end_ns
            fitted.latency = num_of(<uint64_t>(waited // 1000) if waited > 0 else 0)
        fitted.value_length = request.value_length
        fitted.flags = request.flags if request.value_length.present else num_none()
        fitted.ttl = request.ttl
        self.counters.values_out_of_range += fit(&fitted)
        if request.keys == 0:
            self.counters.operations += 1
            self._row(pending, status, &fitted, NULL)
            return 0
        self.counters.operations += request.keys
        for i in range(request.keys):
            slot = &self.slots[pending.first_slot + i]
            if not slot.hit:
                self._row(pending, status, &fitted, slot)
                continue
            key_fitted.value_length = slot.hit_value_length
            key_fitted.flags = slot.hit_flags
            key_fitted.ttl = fitted.ttl
            key_fitted.latency = fitted.latency
            self.counters.values_out_of_range += fit_reply(&key_fitted)
            self._row(pending, S_HIT, &key_fitted, slot)

    cdef int _row(self, Pending* pending, int status, Fitted* fitted, KeySlot* slot) except -1:
        cdef Columns rows = self.rows
        cdef Py_ssize_t row = rows.next_row()
        cdef Unit* request = &pending.request
        rows.timestamp_ns[row] = request.start_ns
        rows.connection[row] = self.connection
        rows.command[row] = request.command
        rows.protocol[row] = request.protocol
        mark(rows.key_valid, row, slot != NULL)
        if slot != NULL:
            if self.memo != NULL:
                rows.key_hash[row] = memo_hash(self.hasher, self.memo, self.arena + slot.offset, slot.length)
            else:
                rows.key_hash[row] = keyed_hash(self.hasher, self.arena + slot.offset, slot.length)
            rows.key_length[row] = <uint16_t>slot.length
        else:
            # Arrow keeps the bytes under a null as they are, and a writer of whole buffers (Arrow IPC) would
            # store them: a zero, not what the heap held before.
            rows.key_hash[row] = 0
            rows.key_length[row] = 0
        mark(rows.value_length_valid, row, fitted.value_length.present)
        rows.value_length[row] = <uint32_t>fitted.value_length.magnitude
        mark(rows.flags_valid, row, fitted.flags.present)
        rows.flags[row] = <uint32_t>fitted.flags.magnitude
        mark(rows.ttl_valid, row, fitted.ttl.present)
        rows.ttl[row] = num_int64(fitted.ttl)
        rows.status[row] = status
        mark(rows.latency_valid, row, fitted.latency.present)
        rows.latency_us[row] = <uint32_t>fitted.latency.magnitude
        rows.batch[row] = pending.batch
        mark(rows.quiet, row, request.noreply or request.quiet)
        mark(rows.effect_valid, row, request.effect != NONE)
        rows.effect[row] = request.effect if request.effect != NONE else 0
        mark(rows.delta_valid, row, request.delta.present and not request.delta.huge)
        rows.delta[row] = request.delta.magnitude
        mark(rows.initial_valid, row, request.initial.present and not request.initial.huge)
        rows.initial[row] = request.initial.magnitude


cdef inline bint _same_opaque(Pairer pairer, Pending* pending, Unit* response, UnitBytes pieces) noexcept:
    """The request's opaque equals the reply's (either may be absent, a binary number or a meta token)."""
    if pending.request.opaque_kind != response.opaque_kind:
        return False
    if response.opaque_kind == 1:
        return pending.request.opaque_number == response.opaque_number
    if response.opaque_kind == 0:
        return True
    cdef Py_ssize_t at = response.keys
    return (pending.opaque_length == pieces.piece_length(at)
            and memcmp(pairer.arena + pending.opaque_offset, pieces.piece(at), pending.opaque_length) == 0)


cdef bint _quiet_meta_can_answer(Unit* request, int reply) noexcept:
    """pairing._quiet_meta_can_answer: whether memcached sends this reply to a quiet meta command."""
    cdef int command = request.command, i
    if command == C_META_GET and HIT_REPLIES & (1u << reply):
        return (reply == R_VALUE) == _has_letter(request, 118)  # v
    if QUIET_META_ANSWERS[command] & (1u << reply):
        return True
    for i in range(4):
        if FLAG_LETTER[command][i] and _has_letter(request, FLAG_LETTER[command][i]) and (
                FLAG_ANSWERS[command][i] & (1u << reply)):
            return True
    return False


cdef inline bint _has_letter(Unit* request, int letter) noexcept:
    return 64 <= letter < 128 and (request.letters >> (letter - 64)) & 1


cdef inline int64_t num_int64(Num n) noexcept:
    if n.negative:
        return <int64_t>(~n.magnitude + 1)
    return <int64_t>n.magnitude
