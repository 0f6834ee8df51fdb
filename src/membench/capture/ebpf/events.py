"""The Python mirror of events.h: struct layouts and constants of the kernel/user contract.

Each layout is declared as (field name, struct format code) pairs in C declaration order, so a test can check
every field offset and size against the BTF of the compiled capture.bpf.o.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

COPY_MAX = 65536
MAX_PORTS = 64
MAX_PIDS = 1024

Layout = tuple[tuple[str, str], ...]


def _struct(layout: Layout) -> struct.Struct:
    # "<" means no implicit padding: events.h is laid out without holes, and the BTF test proves it.
    return struct.Struct("<" + "".join(code for _, code in layout))


EVENT_LAYOUT: Layout = (
    ("timestamp_ns", "Q"),
    ("conn", "Q"),
    ("offset", "Q"),
    ("length", "I"),
    ("copied", "I"),
    ("type", "B"),
    ("direction", "B"),
    ("flags", "H"),
    ("reserved", "I"),
)
EVENT = _struct(EVENT_LAYOUT)

OPEN_INFO_LAYOUT: Layout = (
    ("local_addr", "16s"),
    ("remote_addr", "16s"),
    ("local_port", "H"),
    ("remote_port", "H"),
    ("family", "H"),
    ("reserved", "H"),
)
OPEN_INFO = _struct(OPEN_INFO_LAYOUT)

CONFIG_LAYOUT: Layout = (
    ("realtime_offset_ns", "q"),
    ("copy_limit", "I"),
    ("wakeup_bytes", "I"),
    ("side", "B"),
    ("filter_pids", "B"),
    ("plain_pieces", "H"),
    ("reserved", "4s"),
)
CONFIG = _struct(CONFIG_LAYOUT)
CONFIG_SECTION = ".rodata.config"  # a read-only global: set before load, a constant to the verifier

SWITCH_LAYOUT: Layout = (
    ("enabled", "B"),
    ("reserved", "7s"),
)
SWITCH = _struct(SWITCH_LAYOUT)
SWITCH_SECTION = ".data.switch"  # a writable global: set once every program is attached

PORT_KEY = struct.Struct("<H")
PID_KEY = struct.Struct("<I")
PRESENT = b"\x01"
COUNTER = struct.Struct("<Q")


class EventType(IntEnum):
    DATA = 1
    OPEN = 2
    CLOSE = 3


class SocketDirection(IntEnum):
    INGRESS = 0
    EGRESS = 1


class EventFlag(IntFlag):
    TRUNCATED = 1
    MID_STREAM = 2


class Side(IntEnum):
    SERVER = 0
    CLIENT = 1


class Counter(IntEnum):
    DROPPED_EVENTS = 0
    DROPPED_BYTES = 1
    TABLE_FULL = 2


COUNTER_COUNT = len(Counter)
