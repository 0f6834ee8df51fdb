# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled twin of replay/seen.py's SeenKeys: the pairs met so far in one open-addressing table, 16 bytes a
slot, kept at most half full."""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free

import numpy as np

from membench.replay.seen import check_lengths

include "_splitmix.pxi"

cdef Py_ssize_t FIRST_SLOTS = 1024


cdef struct Slot:
    uint64_t hash
    uint32_t length_1  # the key's length + 1; 0: a free slot


cdef inline uint64_t _spread(uint64_t hash, uint32_t length_1) noexcept:
    # Profile hashes are uniform, but hand-made or imported ones may not be.
    return splitmix64(hash ^ (<uint64_t>length_1 * 0x9E3779B97F4A7C15ULL))


cdef class SeenKeys:
    """See seen.py's SeenKeys."""

    cdef Slot* slots
    cdef Py_ssize_t mask
    cdef Py_ssize_t count

    def __cinit__(self):
        self.slots = <Slot*>calloc(FIRST_SLOTS, sizeof(Slot))
        if self.slots == NULL:
            raise MemoryError()
        self.mask = FIRST_SLOTS - 1

    def __dealloc__(self):
        free(self.slots)

    def first_met(self, hashes, lengths):
        cdef const uint64_t[::1] hash = np.ascontiguousarray(hashes, dtype=np.uint64)
        cdef const int64_t[::1] length = np.ascontiguousarray(lengths, dtype=np.int64)
        cdef Py_ssize_t index, count = hash.shape[0]
        if length.shape[0] != count:
            raise ValueError("as many lengths as hashes")
        check_lengths(lengths)
        met = np.zeros(count, dtype=bool)
        cdef uint8_t[::1] out = met.view(np.uint8)
        for index in range(count):
            if (self.count + 1) * 2 > self.mask + 1:
                self._grow()
            out[index] = self._add(hash[index], <uint32_t>(length[index] + 1))
        return met

    cdef bint _add(self, uint64_t hash, uint32_t length_1) noexcept:
        """Whether the pair is new (it is in the table afterwards)."""
        cdef Py_ssize_t at = <Py_ssize_t>(_spread(hash, length_1) & <uint64_t>self.mask)
        cdef Slot* slot
        while True:
            slot = &self.slots[at]
            if slot.length_1 == 0:
                slot.hash = hash
                slot.length_1 = length_1
                self.count += 1
                return True
            if slot.hash == hash and slot.length_1 == length_1:
                return False
            at = (at + 1) & self.mask

    cdef int _grow(self) except -1:
        cdef Py_ssize_t size = (self.mask + 1) * 2, index
        cdef Slot* old = self.slots
        cdef Py_ssize_t old_size = self.mask + 1
        self.slots = <Slot*>calloc(size, sizeof(Slot))
        if self.slots == NULL:
            self.slots = old
            raise MemoryError()
        self.mask = size - 1
        self.count = 0
        for index in range(old_size):
            if old[index].length_1:
                self._add(old[index].hash, old[index].length_1)
        free(old)
        return 0
