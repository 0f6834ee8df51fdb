# A stream's planned groups as the compiled planner (replay/_pass_plan.pyx) hands them over: the sequence of Groups
# the specification plans, kept as three buffers instead of a tuple, a payload and a dependency tuple per group.
# A replay keeps hundreds of thousands of groups planned ahead, far more than fit in the CPU's caches: admitting one
# read a dozen scattered objects, where the rows of this table lie one after the other.

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyTypeObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_SET_ITEM

cdef extern from "Python.h":
    object PyType_GenericAlloc(PyTypeObject* type, Py_ssize_t items)

from membench.replay.requests import Group

include "../replay/_block_fields.pxi"

cdef Py_ssize_t GROUP_FIELDS = len(Group._fields)
assert Group._fields == ("payload", "slot", "rows", "expect", "units", "at_ns", "outstanding", "seq", "number",
                         "after", "cas", "key")


@cython.final
cdef class GroupBlock:
    """Groups of one stream, in order: a row of BLOCK_FIELDS per group (replay/requests.py), the payloads end to
    end, the dependencies as (stream, number) pairs, and the key of each cas by its index. Reads as a sequence of
    Group; the compiled matcher admits straight from the rows."""

    cdef readonly bytes payloads
    cdef bytes _table
    cdef bytes _after
    cdef const int64_t* table
    cdef const int64_t* after
    cdef readonly Py_ssize_t count
    cdef dict keys

    def __cinit__(self, bytes payloads, bytes table, bytes after, dict keys):
        cdef Py_ssize_t row_size = B_FIELDS * sizeof(int64_t)
        cdef Py_ssize_t index
        cdef int64_t payload_end = 0, after_end = 0
        if len(table) % row_size or len(after) % (2 * sizeof(int64_t)):
            raise ValueError("a group block's table or dependencies are not whole rows")
        self.payloads, self._table, self._after, self.keys = payloads, table, after, keys
        self.table = <const int64_t*>PyBytes_AS_STRING(table)
        self.after = <const int64_t*>PyBytes_AS_STRING(after)
        self.count = len(table) // row_size
        for index in range(self.count):
            if not (payload_end <= self.table[index * B_FIELDS + B_PAYLOAD_END] <= len(payloads)
                    and after_end <= self.table[index * B_FIELDS + B_AFTER_END] <= len(after) // 16):
                raise ValueError("a group block's offsets run backwards or past its buffers")
            payload_end = self.table[index * B_FIELDS + B_PAYLOAD_END]
            after_end = self.table[index * B_FIELDS + B_AFTER_END]

    @staticmethod
    def of(groups):
        """The block of Groups planned elsewhere."""
        cdef list table = []
        cdef list after = []
        cdef dict keys = {}
        cdef Py_ssize_t payload_end = 0
        for index, group in enumerate(groups):
            payload_end += len(group.payload)
            for stream, number in group.after:
                after += [stream, number]
            if group.cas:
                keys[index] = group.key
            table += [group.slot, group.rows, group.expect, group.units, group.at_ns, group.outstanding, group.seq,
                      group.number, group.cas, payload_end, len(after) // 2]
        return GroupBlock(b"".join([group.payload for group in groups]), np.array(table, np.int64).tobytes(),
                          np.array(after, np.int64).tobytes(), keys)

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.group(at) for at in range(*index.indices(self.count))]
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError("group index out of range")
        return self.group(index)

    cdef inline int64_t payload_start(self, Py_ssize_t index) noexcept:
        return self.table[(index - 1) * B_FIELDS + B_PAYLOAD_END] if index else 0

    cdef inline int64_t after_start(self, Py_ssize_t index) noexcept:
        return self.table[(index - 1) * B_FIELDS + B_AFTER_END] if index else 0

    cdef object group(self, Py_ssize_t index):
        """The Group at `index`. An open-loop link makes one of each group it sends: a NamedTuple is a tuple
        subclass, so it is allocated and filled as tuple.__new__ would, without its Python-level constructor."""
        cdef const int64_t* row = self.table + index * B_FIELDS
        cdef Py_ssize_t pair
        cdef object group = PyType_GenericAlloc(<PyTypeObject*>Group, GROUP_FIELDS)
        _put(group, 0, self.payloads[self.payload_start(index):row[B_PAYLOAD_END]])
        _put(group, 1, row[B_SLOT])
        _put(group, 2, row[B_ROWS])
        _put(group, 3, row[B_EXPECT])
        _put(group, 4, row[B_UNITS])
        _put(group, 5, row[B_AT_NS])
        _put(group, 6, row[B_OUTSTANDING])
        _put(group, 7, row[B_SEQ])
        _put(group, 8, row[B_NUMBER])
        _put(group, 9, tuple([(self.after[2 * pair], self.after[2 * pair + 1])
                              for pair in range(self.after_start(index), row[B_AFTER_END])]))
        _put(group, 10, row[B_CAS])
        _put(group, 11, self.keys.get(index, b"") if self.keys else b"")
        return group


cdef inline void _put(object group, Py_ssize_t index, object value):
    Py_INCREF(value)  # PyTuple_SET_ITEM takes over a reference
    PyTuple_SET_ITEM(group, index, value)
