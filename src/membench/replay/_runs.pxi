# Included by _pass_plan.pyx: a stream's groups gathered as they are planned, in the buffers a GroupBlock is made of.

from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

@cython.final
cdef class _Run:
    """One stream's groups of the slice being planned, laid out as GroupBlock's buffers (C arrays reused from slice to
    slice)."""

    cdef int64_t* table
    cdef Py_ssize_t count, capacity
    cdef char* payloads
    cdef Py_ssize_t payload_size, payload_capacity
    cdef int64_t* after  # (stream, number) pairs
    cdef Py_ssize_t after_count, after_capacity
    cdef dict keys  # index of a cas -> its key
    cdef bint listed  # among the streams of the slice

    def __dealloc__(self):
        free(self.table)
        free(self.payloads)
        free(self.after)

    cdef void clear(self) noexcept:
        self.count = self.payload_size = self.after_count = 0
        self.keys = None
        self.listed = False

    cdef object block(self):
        block = GroupBlock(PyBytes_FromStringAndSize(self.payloads, self.payload_size),
                           PyBytes_FromStringAndSize(<char*>self.table, self.count * B_FIELDS * sizeof(int64_t)),
                           PyBytes_FromStringAndSize(<char*>self.after, self.after_count * 2 * sizeof(int64_t)),
                           self.keys)
        self.clear()
        return block

    cdef int64_t* add_row(self) except NULL:
        if self.count == self.capacity:
            self.table = <int64_t*>_grown(self.table, &self.capacity, B_FIELDS * sizeof(int64_t), self.count + 1)
        self.count += 1
        return self.table + (self.count - 1) * B_FIELDS

    cdef int write(self, bytes data) except -1:
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        if self.payload_size + size > self.payload_capacity:
            self.payloads = <char*>_grown(self.payloads, &self.payload_capacity, 1, self.payload_size + size)
        memcpy(self.payloads + self.payload_size, PyBytes_AS_STRING(data), size)
        self.payload_size += size
        return 0

    cdef int depend(self, int64_t stream, int64_t number) except -1:
        if self.after_count == self.after_capacity:
            self.after = <int64_t*>_grown(self.after, &self.after_capacity, 2 * sizeof(int64_t), self.after_count + 1)
        self.after[2 * self.after_count] = stream
        self.after[2 * self.after_count + 1] = number
        self.after_count += 1
        return 0

    cdef int remember_key(self, bytes key) except -1:
        if self.keys is None:
            self.keys = {}
        self.keys[self.count] = key
        return 0


cdef void* _grown(void* items, Py_ssize_t* capacity, size_t item_size, Py_ssize_t needed) except NULL:
    """`items` reallocated to hold at least `needed` items, doubling."""
    cdef Py_ssize_t size = max(capacity[0] * 2, needed, 16)
    cdef void* grown = _resized(items, size, item_size)
    capacity[0] = size
    return grown


cdef void* _resized(void* items, Py_ssize_t size, size_t item_size) except NULL:
    """`items` reallocated to hold `size` items."""
    cdef void* resized = realloc(items, size * item_size)
    if resized == NULL:
        raise MemoryError()
    return resized
