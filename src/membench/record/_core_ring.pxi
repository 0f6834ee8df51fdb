# capture/ebpf/ring.py's decode_records, feeding the pipeline directly: events.h's layout read from events.py at
# import (the layout test holds events.py to the compiled BPF object), nothing per record but C.

import struct as _struct

from membench.capture.ebpf import events as _events
from membench.capture.ebpf.ring import BUSY, DISCARD, RECORD_HEADER

cdef dict _FIELD_AT = {}
_at = 0
for _name, _format in _events.EVENT_LAYOUT:
    _FIELD_AT[_name] = _at
    _at += _struct.calcsize("<" + _format)
cdef Py_ssize_t EVENT_SIZE = _events.EVENT.size
cdef Py_ssize_t AT_TIMESTAMP = _FIELD_AT["timestamp_ns"], AT_CONN = _FIELD_AT["conn"]
cdef Py_ssize_t AT_OFFSET = _FIELD_AT["offset"], AT_LENGTH = _FIELD_AT["length"]
cdef Py_ssize_t AT_COPIED = _FIELD_AT["copied"], AT_TYPE = _FIELD_AT["type"]
cdef Py_ssize_t AT_DIRECTION = _FIELD_AT["direction"], AT_FLAGS = _FIELD_AT["flags"]
cdef uint32_t RING_BUSY = BUSY, RING_DISCARD = DISCARD
cdef Py_ssize_t RING_HEADER = RECORD_HEADER
assert _struct.calcsize(dict(_events.EVENT_LAYOUT)["flags"]) == 2, "drain_ring reads flags as 16 bits"
cdef int EVENT_DATA = _events.EventType.DATA, EVENT_OPEN = _events.EventType.OPEN
cdef int EVENT_CLOSE = _events.EventType.CLOSE
cdef uint32_t FLAG_MID_STREAM = _events.EventFlag.MID_STREAM


cdef inline uint64_t _u64(const uint8_t* p) noexcept:
    cdef uint64_t value
    memcpy(&value, p, 8)
    return value


cdef inline uint16_t _u16(const uint8_t* p) noexcept:
    cdef uint16_t value
    memcpy(&value, p, 2)
    return value


cdef inline uint32_t _u32(const uint8_t* p) noexcept:
    cdef uint32_t value
    memcpy(&value, p, 4)
    return value
