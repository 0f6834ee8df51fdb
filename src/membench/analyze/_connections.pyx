# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of membench.analyze.connections.specification: a batch's rows into the per-connection tables.

Same tables, same values (tests/analyze/test_connections_working_set.py holds them equal), in one pass over the
rows without numpy's per-column temporaries, and without the GIL, so the reading thread decodes meanwhile.
"""

import numpy as np

from libc.stdint cimport int64_t, uint8_t

cdef enum:
    # connections._OPERATIONS ... _ANSWERED: the table's columns
    OPERATIONS, HITS, MISSES, READ, WRITTEN, LATENCY_SUM, ANSWERED


def count_rows(connection, view, table, first, last):
    """connections.specification's contract: adds the view's rows to the tables, in place."""
    cdef const int64_t[::1] row_connection = np.ascontiguousarray(connection, dtype=np.int64)
    cdef const uint8_t[::1] hit = np.ascontiguousarray(view.hit).view(np.uint8)
    cdef const uint8_t[::1] miss = np.ascontiguousarray(view.miss).view(np.uint8)
    cdef const uint8_t[::1] answered = np.ascontiguousarray(view.answered).view(np.uint8)
    cdef const int64_t[::1] bytes_read = np.ascontiguousarray(view.bytes_read, dtype=np.int64)
    cdef const int64_t[::1] bytes_written = np.ascontiguousarray(view.bytes_written, dtype=np.int64)
    cdef const int64_t[::1] latency_us = np.ascontiguousarray(view.latency_us, dtype=np.int64)
    cdef const int64_t[::1] timestamps = np.ascontiguousarray(view.timestamps, dtype=np.int64)
    cdef int64_t[:, ::1] counts = table
    cdef int64_t[::1] earliest = first
    cdef int64_t[::1] latest = last
    cdef Py_ssize_t row, c
    with nogil:
        for row in range(row_connection.shape[0]):
            c = row_connection[row]
            counts[c, OPERATIONS] += 1
            counts[c, HITS] += hit[row]
            counts[c, MISSES] += miss[row]
            counts[c, READ] += bytes_read[row]
            counts[c, WRITTEN] += bytes_written[row]
            counts[c, LATENCY_SUM] += latency_us[row]
            counts[c, ANSWERED] += answered[row]
            if timestamps[row] < earliest[c]:
                earliest[c] = timestamps[row]
            if timestamps[row] > latest[c]:
                latest[c] = timestamps[row]
