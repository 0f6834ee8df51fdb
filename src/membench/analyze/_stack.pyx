# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of membench.analyze.stack.specification: LRU stack distances in bytes and objects.

Same algorithm, same results (tests/analyze/test_stack.py holds them equal): two Fenwick trees over access
positions, a key's latest size and a 1 at its latest access; the dense key ids index the last-access table.
"""

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t

cnp.import_array()


cdef inline void _add(int64_t[::1] tree, Py_ssize_t index, int64_t delta) noexcept nogil:
    cdef Py_ssize_t n = tree.shape[0]
    while index < n:
        tree[index] += delta
        index += index & -index


cdef inline int64_t _sum(int64_t[::1] tree, Py_ssize_t index) noexcept nogil:
    cdef int64_t total = 0
    while index > 0:
        total += tree[index]
        index -= index & -index
    return total


def stack_distances(keys, sizes):
    """(bytes, objects) distance per access; `keys` are dense ids 0..K-1 (int64), `sizes` their sizes (int64)."""
    cdef const int64_t[::1] key = np.ascontiguousarray(keys, dtype=np.int64)
    cdef const int64_t[::1] size = np.ascontiguousarray(sizes, dtype=np.int64)
    cdef Py_ssize_t count = key.shape[0]
    cdef Py_ssize_t distinct = (max(keys) + 1) if count else 0
    by_bytes_array = np.full(count, -1, dtype=np.int64)
    by_objects_array = np.full(count, -1, dtype=np.int64)
    cdef int64_t[::1] by_bytes = by_bytes_array
    cdef int64_t[::1] by_objects = by_objects_array
    cdef int64_t[::1] byte_tree = np.zeros(count + 1, dtype=np.int64)
    cdef int64_t[::1] object_tree = np.zeros(count + 1, dtype=np.int64)
    cdef int64_t[::1] last = np.full(distinct, -1, dtype=np.int64)
    cdef Py_ssize_t position, previous
    cdef int64_t k
    with nogil:
        for position in range(count):
            k = key[position]
            previous = last[k]
            if previous >= 0:
                by_bytes[position] = _sum(byte_tree, count) - _sum(byte_tree, previous)
                by_objects[position] = _sum(object_tree, count) - _sum(object_tree, previous)
                _add(byte_tree, previous + 1, -size[previous])
                _add(object_tree, previous + 1, -1)
            _add(byte_tree, position + 1, size[position])
            _add(object_tree, position + 1, 1)
            last[k] = position
    return by_bytes_array, by_objects_array
