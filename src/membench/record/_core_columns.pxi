# The profile's columns, filled row by row in C and handed to pyarrow as they are: no Python object per operation,
# and no pass over the rows when they are taken. Nullable columns keep Arrow's own validity bitmaps (a set bit is a
# present value), the dictionary columns keep their int8 indices, and `take` wraps these buffers without copying.

import numpy as np
import pyarrow as pa

from membench.profile.schema import SCHEMA

cimport numpy as cnp

cnp.import_array()

cdef enum:
    INITIAL_ROWS = 1 << 14

# Column name -> the numpy type of its values; the Arrow types are the schema's.
_VALUE_TYPES = {"timestamp_ns": np.int64, "connection": np.uint32, "command": np.uint8, "protocol": np.uint8,
                "key_hash": np.uint64, "key_length": np.uint16, "value_length": np.uint32, "flags": np.uint32,
                "ttl": np.int64, "status": np.uint8, "latency_us": np.uint32, "batch": np.uint64,
                "effect": np.uint8, "delta": np.uint64, "initial": np.uint64}
# Columns that may be null, and `quiet`, a bool column, which Arrow also stores as a bitmap.
_BITMAPS = ("key", "value_length", "flags", "ttl", "latency", "effect", "delta", "initial", "quiet")
_BITMAP_OF = {"key_hash": "key", "key_length": "key", "value_length": "value_length", "flags": "flags",
              "ttl": "ttl", "latency_us": "latency", "effect": "effect", "delta": "delta", "initial": "initial"}
_DICTIONARY_MEMBERS = {"command": COMMANDS, "protocol": PROTOCOLS, "status": STATUSES, "effect": COMMANDS}
_DICTIONARY_VALUES = {name: pa.array([member.value for member in members])
                      for name, members in _DICTIONARY_MEMBERS.items()}


cdef inline void mark(uint8_t[::1] bitmap, Py_ssize_t row, bint present) noexcept:
    """Set the row's bit where the value is present (bitmaps start zeroed, so absence needs no write)."""
    if present:
        bitmap[row >> 3] |= <uint8_t>(1 << (row & 7))


@cython.final
cdef class Columns:
    cdef Py_ssize_t size, capacity
    cdef object values  # column name -> numpy array of `capacity` rows
    cdef object bitmaps  # _BITMAPS name -> zeroed numpy uint8 array of capacity / 8 bytes
    cdef int64_t[::1] timestamp_ns, ttl
    cdef uint32_t[::1] connection, value_length, flags, latency_us
    cdef uint8_t[::1] command, protocol, status, effect
    cdef uint64_t[::1] key_hash, batch, delta, initial
    cdef uint16_t[::1] key_length
    cdef uint8_t[::1] key_valid, value_length_valid, flags_valid, ttl_valid, latency_valid, effect_valid
    cdef uint8_t[::1] delta_valid, initial_valid, quiet

    def __cinit__(self):
        self.size = 0
        self._allocate(INITIAL_ROWS)

    def _allocate(self, Py_ssize_t capacity):
        """Fresh buffers for `capacity` rows, holding the rows so far."""
        cdef Py_ssize_t kept = self.size
        old_values, old_bitmaps = self.values, self.bitmaps
        values = {name: np.empty(capacity, dtype=dtype) for name, dtype in _VALUE_TYPES.items()}
        bitmaps = {name: np.zeros((capacity + 7) // 8, dtype=np.uint8) for name in _BITMAPS}
        if kept:
            for name, array in values.items():
                array[:kept] = old_values[name][:kept]
            for name, bitmap in bitmaps.items():
                bitmap[:(kept + 7) // 8] = old_bitmaps[name][:(kept + 7) // 8]
        self.values, self.bitmaps, self.capacity = values, bitmaps, capacity
        self.timestamp_ns, self.ttl = values["timestamp_ns"], values["ttl"]
        self.connection, self.value_length = values["connection"], values["value_length"]
        self.flags, self.latency_us = values["flags"], values["latency_us"]
        self.command, self.protocol = values["command"], values["protocol"]
        self.status, self.effect = values["status"], values["effect"]
        self.key_hash, self.batch = values["key_hash"], values["batch"]
        self.delta, self.initial = values["delta"], values["initial"]
        self.key_length = values["key_length"]
        self.key_valid, self.value_length_valid = bitmaps["key"], bitmaps["value_length"]
        self.flags_valid, self.ttl_valid = bitmaps["flags"], bitmaps["ttl"]
        self.latency_valid, self.effect_valid = bitmaps["latency"], bitmaps["effect"]
        self.delta_valid, self.initial_valid = bitmaps["delta"], bitmaps["initial"]
        self.quiet = bitmaps["quiet"]

    cdef inline Py_ssize_t next_row(self) except -1:
        if self.size == self.capacity:
            self._allocate(self.capacity * 2)
        self.size += 1
        return self.size - 1

    def take(self):
        """The rows so far as a table of the profile's schema, over these very buffers; the columns start empty
        again in new ones, sized for a batch like this one."""
        cdef Py_ssize_t rows = self.size
        values, bitmaps = self.values, self.bitmaps
        self.size = 0
        self._allocate(max(INITIAL_ROWS, 1 << (rows - 1).bit_length()) if rows else self.capacity)
        columns = []
        for field in SCHEMA:
            name = field.name
            if name == "quiet":
                columns.append(pa.Array.from_buffers(pa.bool_(), rows, [None, pa.py_buffer(bitmaps["quiet"])]))
                continue
            bitmap = _BITMAP_OF.get(name)
            validity = pa.py_buffer(bitmaps[bitmap]) if bitmap is not None else None
            if name in _DICTIONARY_VALUES:
                indices = pa.Array.from_buffers(pa.int8(), rows, [validity, pa.py_buffer(values[name])])
                columns.append(pa.DictionaryArray.from_arrays(indices, _DICTIONARY_VALUES[name]))
            else:
                columns.append(pa.Array.from_buffers(field.type, rows, [validity, pa.py_buffer(values[name])]))
        return pa.Table.from_arrays(columns, schema=SCHEMA)
