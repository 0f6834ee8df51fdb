# The profile's columns, filled row by row in C and handed to pyarrow as arrays: no Python object per operation.

import numpy as np
import pyarrow as pa

from membench.profile.schema import SCHEMA

cimport numpy as cnp

cnp.import_array()

_DICTIONARIES = {"command": COMMANDS, "protocol": PROTOCOLS, "status": STATUSES, "effect": COMMANDS}


cdef class Columns:
    cdef Py_ssize_t size, capacity
    cdef object arrays  # column name -> numpy array of `capacity` rows
    cdef int64_t[::1] timestamp_ns, ttl
    cdef uint32_t[::1] connection, value_length, flags, latency_us
    cdef uint8_t[::1] command, protocol, status, effect, quiet
    cdef uint64_t[::1] key_hash, batch, delta, initial
    cdef uint16_t[::1] key_length
    cdef uint8_t[::1] has_key, has_value_length, has_flags, has_ttl, has_latency, has_delta, has_initial

    def __cinit__(self):
        self.size = 0
        self._allocate(1 << 14)

    def _allocate(self, Py_ssize_t capacity):
        old = self.arrays
        types = {"timestamp_ns": np.int64, "ttl": np.int64, "connection": np.uint32, "value_length": np.uint32,
                 "flags": np.uint32, "latency_us": np.uint32, "command": np.uint8, "protocol": np.uint8,
                 "status": np.uint8, "effect": np.uint8, "quiet": np.uint8, "key_hash": np.uint64,
                 "batch": np.uint64, "delta": np.uint64, "initial": np.uint64, "key_length": np.uint16}
        for name in ("key", "value_length", "flags", "ttl", "latency", "delta", "initial"):
            types["has_" + name] = np.uint8
        arrays = {}
        for name, dtype in types.items():
            arrays[name] = np.zeros(capacity, dtype=dtype)
            if old is not None:
                arrays[name][:self.size] = old[name][:self.size]
        self.arrays = arrays
        self.capacity = capacity
        self.timestamp_ns, self.ttl = arrays["timestamp_ns"], arrays["ttl"]
        self.connection, self.value_length = arrays["connection"], arrays["value_length"]
        self.flags, self.latency_us = arrays["flags"], arrays["latency_us"]
        self.command, self.protocol, self.status = arrays["command"], arrays["protocol"], arrays["status"]
        self.effect, self.quiet = arrays["effect"], arrays["quiet"]
        self.key_hash, self.batch = arrays["key_hash"], arrays["batch"]
        self.delta, self.initial = arrays["delta"], arrays["initial"]
        self.key_length = arrays["key_length"]
        self.has_key, self.has_value_length = arrays["has_key"], arrays["has_value_length"]
        self.has_flags, self.has_ttl = arrays["has_flags"], arrays["has_ttl"]
        self.has_latency, self.has_delta = arrays["has_latency"], arrays["has_delta"]
        self.has_initial = arrays["has_initial"]

    cdef inline Py_ssize_t next_row(self) except -1:
        if self.size == self.capacity:
            self._allocate(self.capacity * 2)
        self.size += 1
        return self.size - 1

    def take(self):
        """The rows so far as a table of the profile's schema; the columns start empty again."""
        cdef Py_ssize_t n = self.size
        a = {name: array[:n].copy() for name, array in self.arrays.items()}
        self.size = 0
        columns = {
            "timestamp_ns": pa.array(a["timestamp_ns"]),
            "connection": pa.array(a["connection"]),
            "command": _dictionary(a["command"], None, COMMANDS),
            "protocol": _dictionary(a["protocol"], None, PROTOCOLS),
            "key_hash": pa.array(a["key_hash"], mask=a["has_key"] == 0),
            "key_length": pa.array(a["key_length"], mask=a["has_key"] == 0),
            "value_length": pa.array(a["value_length"], mask=a["has_value_length"] == 0),
            "flags": pa.array(a["flags"], mask=a["has_flags"] == 0),
            "ttl": pa.array(a["ttl"], mask=a["has_ttl"] == 0),
            "status": _dictionary(a["status"], None, STATUSES),
            "latency_us": pa.array(a["latency_us"], mask=a["has_latency"] == 0),
            "batch": pa.array(a["batch"]),
            "quiet": pa.array(a["quiet"].astype(bool)),
            "effect": _dictionary(a["effect"], a["effect"] == NONE, COMMANDS),
            "delta": pa.array(a["delta"], mask=a["has_delta"] == 0),
            "initial": pa.array(a["initial"], mask=a["has_initial"] == 0),
        }
        return pa.Table.from_arrays([columns[name] for name in SCHEMA.names], schema=SCHEMA)


def _dictionary(codes, mask, members):
    indices = pa.array(codes.astype(np.int8), mask=mask)
    return pa.DictionaryArray.from_arrays(indices, pa.array([member.value for member in members]))
