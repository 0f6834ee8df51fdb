# replay/order.py's KeyOrder, rule for rule, included by _pass_plan.pyx. Each server's keys live in a C hash table
# (a key's latest write, and its readers since by stream) and a request's dependencies are gathered in C arrays:
# ordering a request allocates nothing, as the planner copies the settled dependencies into its group rows. As in
# the specification, a key is known by its hash alone: the table holds no key object, and its first reader is kept
# in its slot, so a key read from one stream only (most keys of a big profile) costs one slot and no allocation.

from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memset

cdef extern from "Python.h":
    Py_hash_t PyObject_Hash(object value) except -1

cdef enum KeyEffect:
    EFFECT_NONE = 0  # a keyless request without global effect: orders nothing
    EFFECT_READ = 1
    EFFECT_WRITE = 2
    EFFECT_FLUSH = 3

cdef object _READS = frozenset(RETRIEVAL_COMMANDS | {Command.TOUCH})
cdef Py_ssize_t FIRST_KEY_SLOTS = 64
cdef Py_ssize_t FIRST_READER_SLOTS = 4
# Streams and servers index C arrays: bounded far above any replay's sockets, so that sizes cannot overflow.
cdef int64_t MAX_STREAMS = 1 << 24


cdef int _effect_of(object command, bint keyed):
    if command is Command.FLUSH_ALL:
        return EFFECT_FLUSH
    if command in _READS:
        return EFFECT_READ
    return EFFECT_WRITE if keyed else EFFECT_NONE


cdef struct Dependency:
    int64_t stream
    int64_t number


cdef struct Readers:
    # A key's latest read on each stream since the key's last write: open addressing on the stream (-1: free).
    Py_ssize_t count
    Py_ssize_t mask  # slots - 1, a power of two
    int64_t* streams
    int64_t* numbers


cdef struct KeySlot:
    Py_hash_t hash  # FREE_SLOT: a free slot
    int64_t writer_number
    int32_t writer_stream  # -1 before the key's first write
    int32_t reader_stream  # the first stream that read the key since its last write, -1 for none
    int64_t reader_number  # that stream's latest read of the key
    Readers* readers  # the other streams' latest reads since the last write; NULL for none


# Python never hashes to -1 (its error value), so -1 marks a free slot.
cdef Py_hash_t FREE_SLOT = -1


cdef inline Py_ssize_t _spread(int64_t stream, Py_ssize_t mask) noexcept:
    return <Py_ssize_t>((<uint64_t>stream * 0x9E3779B97F4A7C15ULL) >> 32) & mask


cdef Readers* _new_readers(Py_ssize_t slots) except NULL:
    cdef Readers* readers = <Readers*>calloc(1, sizeof(Readers))
    if readers == NULL:
        raise MemoryError()
    readers.mask = slots - 1
    readers.streams = <int64_t*>malloc(slots * sizeof(int64_t))
    readers.numbers = <int64_t*>malloc(slots * sizeof(int64_t))
    if readers.streams == NULL or readers.numbers == NULL:
        _free_readers(readers)
        raise MemoryError()
    memset(readers.streams, 0xFF, slots * sizeof(int64_t))  # every slot -1: free
    return readers


cdef void _free_readers(Readers* readers) noexcept:
    if readers != NULL:
        free(readers.streams)
        free(readers.numbers)
        free(readers)


cdef void _put_reader(Readers* readers, int64_t stream, int64_t number) noexcept:
    """Room is known to be there."""
    cdef Py_ssize_t at = _spread(stream, readers.mask)
    while readers.streams[at] != -1 and readers.streams[at] != stream:
        at = (at + 1) & readers.mask
    if readers.streams[at] == -1:
        readers.streams[at] = stream
        readers.count += 1
    readers.numbers[at] = number


cdef int _read_by(KeySlot* slot, int64_t stream, int64_t number) except -1:
    """Records that `stream` read the key in request `number` (its latest read of the key)."""
    cdef Readers* readers = slot.readers
    cdef Readers* grown
    cdef Py_ssize_t at
    if slot.reader_stream == -1 or slot.reader_stream == stream:
        slot.reader_stream = <int32_t>stream
        slot.reader_number = number
        return 0
    if readers == NULL:
        readers = slot.readers = _new_readers(FIRST_READER_SLOTS)
    elif (readers.count + 1) * 2 > readers.mask + 1:
        grown = _new_readers((readers.mask + 1) * 2)
        for at in range(readers.mask + 1):
            if readers.streams[at] != -1:
                _put_reader(grown, readers.streams[at], readers.numbers[at])
        _free_readers(readers)
        readers = slot.readers = grown
    _put_reader(readers, stream, number)
    return 0


cdef int _by_stream(const void* left, const void* right) noexcept nogil:
    cdef int64_t a = (<const Dependency*>left).stream
    cdef int64_t b = (<const Dependency*>right).stream
    return (a > b) - (a < b)


cdef KeySlot* _free_slots(Py_ssize_t size) except NULL:
    cdef KeySlot* slots = <KeySlot*>malloc(size * sizeof(KeySlot))
    cdef Py_ssize_t index
    if slots == NULL:
        raise MemoryError()
    for index in range(size):
        slots[index].hash = FREE_SLOT
    return slots


cdef void _clear_readers(KeySlot* slot) noexcept:
    slot.reader_stream = -1
    _free_readers(slot.readers)
    slot.readers = NULL


@cython.final
cdef class _Server:
    """What one server has been sent so far in this pass: each key's latest write and reads, each stream's latest
    request, and the latest flush_all."""

    cdef KeySlot* slots
    cdef Py_ssize_t mask
    cdef Py_ssize_t keys
    cdef int64_t* last  # per stream: its latest request here, -1 for none
    cdef uint8_t* past_barrier  # per stream: it has waited for the barrier (its order covers the rest)
    cdef Py_ssize_t streams  # streams the two arrays above cover
    cdef int64_t barrier_stream  # -1: no flush_all yet
    cdef int64_t barrier_number

    def __cinit__(self):
        self.slots = _free_slots(FIRST_KEY_SLOTS)
        self.mask = FIRST_KEY_SLOTS - 1
        self.barrier_stream = -1

    def __dealloc__(self):
        if self.slots != NULL:
            self.forget_keys()
        free(self.slots)
        free(self.last)
        free(self.past_barrier)

    cdef int cover(self, int64_t stream) except -1:
        """Grows the per-stream arrays to hold `stream`."""
        cdef Py_ssize_t size = max(self.streams * 2, stream + 1, 16)
        if stream < self.streams:
            return 0
        if stream >= MAX_STREAMS:
            raise ValueError(f"stream {stream} past the key order's {MAX_STREAMS}")
        self.last = <int64_t*>_resized(self.last, size, sizeof(int64_t))
        self.past_barrier = <uint8_t*>_resized(self.past_barrier, size, 1)
        memset(self.last + self.streams, 0xFF, (size - self.streams) * sizeof(int64_t))
        memset(self.past_barrier + self.streams, 0, size - self.streams)
        self.streams = size
        return 0

    cdef KeySlot* slot(self, bytes key) except NULL:
        """The key's slot, made on its first request."""
        cdef Py_hash_t hash = PyObject_Hash(key)
        cdef Py_ssize_t at
        cdef KeySlot* found
        if (self.keys + 1) * 2 > self.mask + 1:
            self._grow()
        at = <Py_ssize_t>(<uint64_t>hash & <uint64_t>self.mask)
        while True:
            found = &self.slots[at]
            if found.hash == hash:
                return found
            if found.hash == FREE_SLOT:
                found.hash = hash
                found.writer_stream = -1
                found.writer_number = -1
                found.reader_stream = -1
                found.readers = NULL
                self.keys += 1
                return found
            at = (at + 1) & self.mask

    cdef int _grow(self) except -1:
        cdef Py_ssize_t size = (self.mask + 1) * 2
        cdef KeySlot* old = self.slots
        cdef KeySlot* slots = _free_slots(size)
        cdef Py_ssize_t index, at
        for index in range(self.mask + 1):
            if old[index].hash != FREE_SLOT:
                at = <Py_ssize_t>(<uint64_t>old[index].hash & <uint64_t>(size - 1))
                while slots[at].hash != FREE_SLOT:
                    at = (at + 1) & (size - 1)
                slots[at] = old[index]
        self.slots = slots
        self.mask = size - 1
        free(old)
        return 0

    cdef void forget_keys(self) noexcept:
        cdef Py_ssize_t index
        for index in range(self.mask + 1):
            if self.slots[index].hash != FREE_SLOT:
                _free_readers(self.slots[index].readers)
                self.slots[index].hash = FREE_SLOT
        self.keys = 0


@cython.final
cdef class KeyOrder:
    """See order.py's KeyOrder."""

    cdef list _servers  # index: the server; None where none was sent to yet
    cdef Dependency* _after  # the request's dependencies being gathered, at most one per stream
    cdef Py_ssize_t _count
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t* _position  # per stream: its place in _after, -1 for none
    cdef Py_ssize_t _streams

    def __cinit__(self):
        self._servers = []

    def __dealloc__(self):
        free(self._after)
        free(self._position)

    def dependencies(self, stream, server, number, command, keys):
        if not (0 <= stream < MAX_STREAMS and 0 <= server < MAX_STREAMS):  # they index C arrays
            raise ValueError(f"streams and servers are numbered from 0 to {MAX_STREAMS - 1}")
        self.note(stream, server, number, _effect_of(command, len(keys) > 0), list(keys))
        return self._gathered(stream)

    cdef _Server _server(self, Py_ssize_t server):
        cdef _Server state
        while len(self._servers) <= server:
            self._servers.append(None)
        state = self._servers[server]
        if state is None:
            state = self._servers[server] = _Server()
        return state

    cdef int _add(self, int64_t stream, int64_t number) except -1:
        """A dependency on request `number` of `stream`; per stream only the latest counts, since a stream answers
        in order."""
        cdef Py_ssize_t size, at
        if stream >= self._streams:
            size = max(self._streams * 2, stream + 1, 16)
            self._position = <Py_ssize_t*>_resized(self._position, size, sizeof(Py_ssize_t))
            memset(self._position + self._streams, 0xFF, (size - self._streams) * sizeof(Py_ssize_t))
            self._streams = size
        at = self._position[stream]
        if at >= 0:
            if number > self._after[at].number:
                self._after[at].number = number
            return 0
        if self._count == self._capacity:
            self._after = <Dependency*>_grown(self._after, &self._capacity, sizeof(Dependency), self._count + 1)
        self._after[self._count].stream = stream
        self._after[self._count].number = number
        self._position[stream] = self._count
        self._count += 1
        return 0

    cdef Py_ssize_t settle(self, int64_t own) noexcept:
        """Ends a gathering: the dependencies but on the request's own stream, in stream order, are then the first
        ones of _after; returns how many."""
        cdef Py_ssize_t index, kept = 0
        for index in range(self._count):
            self._position[self._after[index].stream] = -1
            if self._after[index].stream != own:
                self._after[kept] = self._after[index]
                kept += 1
        self._count = 0
        if kept > 1:
            qsort(self._after, kept, sizeof(Dependency), _by_stream)
        return kept

    cdef tuple _gathered(self, int64_t own):
        """settle(), as the specification's tuple (the planner copies the settled dependencies into its rows)."""
        cdef Py_ssize_t index, kept = self.settle(own)
        if kept == 0:
            return _NO_DEPENDENCIES
        return tuple([(self._after[index].stream, self._after[index].number) for index in range(kept)])

    cdef int note(self, int64_t stream, Py_ssize_t server, int64_t number, int effect, list keys) except -1:
        """Gathers what request `number` on `stream` must wait for (settle() ends the gathering); records it as the
        latest on its keys and server."""
        cdef _Server state = self._server(server)
        cdef KeySlot* slot
        cdef Py_ssize_t at
        cdef bytes key
        if self._count:  # a request that failed half gathered (a key that was no bytes): its gathering is void
            self.settle(-1)
        state.cover(stream)
        if state.barrier_stream >= 0 and not state.past_barrier[stream]:
            self._add(state.barrier_stream, state.barrier_number)
            state.past_barrier[stream] = 1
        elif effect == EFFECT_READ and len(keys) == 1:
            # The common case: a one-key read waits for the key's latest write, if another stream made it.
            slot = state.slot(keys[0])
            _read_by(slot, stream, number)
            state.last[stream] = number
            if slot.writer_stream >= 0:
                self._add(slot.writer_stream, slot.writer_number)
            return 0
        if effect == EFFECT_FLUSH:
            for at in range(state.streams):
                if state.last[at] >= 0:
                    self._add(at, state.last[at])
            state.forget_keys()
            state.barrier_stream = stream
            state.barrier_number = number
            memset(state.past_barrier, 0, state.streams)
            state.past_barrier[stream] = 1
        elif effect == EFFECT_READ:
            for key in keys:
                slot = state.slot(key)
                if slot.writer_stream >= 0:
                    self._add(slot.writer_stream, slot.writer_number)
                _read_by(slot, stream, number)
        elif effect == EFFECT_WRITE:
            for key in keys:
                slot = state.slot(key)
                if slot.writer_stream >= 0:
                    self._add(slot.writer_stream, slot.writer_number)
                if slot.reader_stream >= 0:
                    self._add(slot.reader_stream, slot.reader_number)
                if slot.readers != NULL:
                    for at in range(slot.readers.mask + 1):
                        if slot.readers.streams[at] != -1:
                            self._add(slot.readers.streams[at], slot.readers.numbers[at])
                _clear_readers(slot)
                slot.writer_stream = <int32_t>stream
                slot.writer_number = number
        state.last[stream] = number
        return 0
