# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of membench.analyze.stack.specification: LRU stack distances in bytes and objects.

Same algorithm, same results (tests/analyze/test_stack.py holds them equal): two Fenwick trees over access
positions, a key's latest size and a 1 at its latest access; the dense key ids index the last-access table. The
two trees share one array, and the sums over all positions are kept as running totals rather than walked.
"""

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t

cnp.import_array()


cdef inline void _add(int64_t[::1] tree, Py_ssize_t index, int64_t size, int64_t objects) noexcept nogil:
    # The byte and object trees interleaved: one walk, one cache line per node for both.
    cdef Py_ssize_t n = tree.shape[0] // 2
    while index < n:
        tree[2 * index] += size
        tree[2 * index + 1] += objects
        index += index & -index


cdef inline void _prefix(int64_t[::1] tree, Py_ssize_t index, int64_t* size, int64_t* objects) noexcept nogil:
    """Sums of positions 1..index of both trees."""
    size[0] = 0
    objects[0] = 0
    while index > 0:
        size[0] += tree[2 * index]
        objects[0] += tree[2 * index + 1]
        index -= index & -index


def stack_distances(keys, sizes):
    """(bytes, objects) distance per access; `keys` are dense ids 0..K-1 (int64), `sizes` their sizes (int64)."""
    cdef const int64_t[::1] key = np.ascontiguousarray(keys, dtype=np.int64)
    cdef const int64_t[::1] size = np.ascontiguousarray(sizes, dtype=np.int64)
    cdef Py_ssize_t count = key.shape[0]
    cdef Py_ssize_t distinct = (int(np.max(keys)) + 1) if count else 0
    by_bytes_array = np.full(count, -1, dtype=np.int64)
    by_objects_array = np.full(count, -1, dtype=np.int64)
    cdef int64_t[::1] by_bytes = by_bytes_array
    cdef int64_t[::1] by_objects = by_objects_array
    cdef int64_t[::1] tree = np.zeros(2 * (count + 1), dtype=np.int64)
    cdef int64_t[::1] last = np.full(distinct, -1, dtype=np.int64)
    cdef Py_ssize_t position, previous
    cdef int64_t k, bytes_before, objects_before
    # What the trees hold in all: the latest size of every key seen, and their number.
    cdef int64_t total_bytes = 0, total_objects = 0
    with nogil:
        for position in range(count):
            k = key[position]
            previous = last[k]
            if previous >= 0:
                _prefix(tree, previous, &bytes_before, &objects_before)
                by_bytes[position] = total_bytes - bytes_before
                by_objects[position] = total_objects - objects_before
                _add(tree, previous + 1, -size[previous], -1)
                total_bytes -= size[previous]
                total_objects -= 1
            _add(tree, position + 1, size[position], 1)
            total_bytes += size[position]
            total_objects += 1
            last[k] = position
    return by_bytes_array, by_objects_array
