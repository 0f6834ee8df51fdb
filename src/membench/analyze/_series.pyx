# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of membench.analyze.series.specification: a batch's rows into the per-window tables.

Same tables, same values (tests/analyze/test_series.py holds them equal), in one pass over the rows without the
temporaries numpy needs for each mask, and without the GIL, so the reading thread decodes meanwhile.
"""

import numpy as np

from libc.stdint cimport int64_t, uint8_t, uint64_t

cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil

cdef enum:
    SUB_BUCKETS = 8  # series._SUB_BUCKETS and the rest of its constants
    LINEAR = 16
    REGISTER_BITS = 10
    RANK_BITS = 52


cdef inline Py_ssize_t _bucket(int64_t value) noexcept nogil:
    """The log-linear bucket of a latency: series.latency_bucket's arithmetic, with the exponent from clz."""
    cdef int exponent, shift
    if value < LINEAR:
        return value
    exponent = 63 - __builtin_clzll(<unsigned long long>value)
    shift = exponent - 3
    return LINEAR + (exponent - 4) * SUB_BUCKETS + ((value >> shift) & (SUB_BUCKETS - 1))


cdef inline uint8_t _rank(uint64_t hash_value) noexcept nogil:
    """HyperLogLog's rank: 1 + the leading zeros of the hash's low RANK_BITS bits (RANK_BITS + 1 if all zero)."""
    cdef uint64_t rest = hash_value & ((<uint64_t>1 << RANK_BITS) - 1)
    if rest == 0:
        return RANK_BITS + 1
    return <uint8_t>(__builtin_clzll(rest) - (64 - RANK_BITS) + 1)


def count_rows(window, view, counts, written, latency, registers):
    """series.specification's contract: adds the view's rows to the four tables, in place."""
    cdef const int64_t[::1] row_window = np.ascontiguousarray(window, dtype=np.int64)
    cdef const uint8_t[::1] hit = np.ascontiguousarray(view.hit).view(np.uint8)
    cdef const uint8_t[::1] miss = np.ascontiguousarray(view.miss).view(np.uint8)
    cdef const uint8_t[::1] answered = np.ascontiguousarray(view.answered).view(np.uint8)
    cdef const uint8_t[::1] keyed = np.ascontiguousarray(view.keyed).view(np.uint8)
    cdef const int64_t[::1] bytes_read = np.ascontiguousarray(view.bytes_read, dtype=np.int64)
    cdef const int64_t[::1] bytes_written = np.ascontiguousarray(view.bytes_written, dtype=np.int64)
    cdef const int64_t[::1] latency_us = np.ascontiguousarray(view.latency_us, dtype=np.int64)
    cdef const uint64_t[::1] key_hash = np.ascontiguousarray(view.key_hash, dtype=np.uint64)
    cdef int64_t[:, ::1] count_table = counts
    cdef int64_t[::1] written_table = written
    cdef int64_t[:, ::1] latency_table = latency
    cdef uint8_t[:, ::1] register_table = registers
    cdef Py_ssize_t row, w, register
    cdef uint8_t rank
    with nogil:
        for row in range(row_window.shape[0]):
            w = row_window[row]
            count_table[w, 0] += 1
            count_table[w, 1] += hit[row]
            count_table[w, 2] += miss[row]
            count_table[w, 3] += bytes_read[row]
            written_table[w] += bytes_written[row]
            if answered[row]:
                latency_table[w, _bucket(latency_us[row])] += 1
            if keyed[row]:
                register = <Py_ssize_t>(key_hash[row] >> (64 - REGISTER_BITS))
                rank = _rank(key_hash[row])
                if rank > register_table[w, register]:
                    register_table[w, register] = rank
