"""Sans-IO parsers for memcached's binary protocol: one event per packet, in both directions.

A packet is a 24-byte header, extras, key and value; the header gives every length, so a packet is framed
without looking at its content. The head (header, extras, key) is buffered when a chunk ends inside it; the value
is only counted down. A header that cannot be one (wrong magic, lengths that do not add up) means the framing is
lost: the parser then scans for the next plausible header, which must also pass strict checks (a known opcode,
the extras length that opcode uses, a sane key length and data type) before it is trusted.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from typing import NamedTuple

from membench.protocol.events import Command, ParserEvent, Protocol, Reply, Request, Response, request, response
from membench.protocol.framing import FramedParser, ParserStats

REQUEST_MAGIC = 0x80
RESPONSE_MAGIC = 0x81
HEADER = struct.Struct(">BBHBBHIIQ")  # magic, opcode, key length, extras length, data type, vbucket/status,
#                                         total body length, opaque, cas
HEADER_SIZE = HEADER.size
KEY_MAX = 250
# memcached's largest item is 1 GiB (-I 1024m); a body longer than that is not a packet but garbage.
BODY_MAX = (1 << 30) + (1 << 16)

_STORE_EXTRAS = struct.Struct(">II")  # flags, expiration
_ARITHMETIC_EXTRAS = struct.Struct(">QQI")  # delta, initial, expiration
_NO_AUTOVIVIFY = 0xFFFFFFFF  # an arithmetic expiration that says: fail on a missing key, do not create it
_UINT32 = struct.Struct(">I")
_BINARY = Protocol.BINARY
# An enum member looked up on its class costs a Python-level attribute access each time; per-packet code uses these.
_VALUE, _MISS, _NOT_FOUND, _STAT, _END, _OTHER_REPLY, _SERVER_ERROR = (
    Reply.VALUE, Reply.MISS, Reply.NOT_FOUND, Reply.STAT, Reply.END, Reply.OTHER, Reply.SERVER_ERROR)
_STATS, _CAS = Command.STATS, Command.CAS
_CAS_CAPABLE = frozenset({Command.SET, Command.REPLACE})


class Kind(NamedTuple):
    """What an opcode is: the command it maps onto and how its packets are laid out."""

    command: Command
    quiet: bool
    request_extras: frozenset[int]  # extras lengths a request of this opcode may carry
    keyed: bool  # the key names a cache item (not a stats group or SASL mechanism)
    family: str  # "get", "store", "append", "delete", "arith", "touch", or "" (keyless or unmodelled)


def _kind(command: Command, quiet: bool, extras: tuple[int, ...], keyed: bool, family: str) -> Kind:
    return Kind(command, quiet, frozenset(extras), keyed, family)


OPCODES: dict[int, Kind] = {
    0x00: _kind(Command.GET, False, (0,), True, "get"),  # Get
    0x09: _kind(Command.GET, True, (0,), True, "get"),  # GetQ
    0x0C: _kind(Command.GET, False, (0,), True, "get"),  # GetK
    0x0D: _kind(Command.GET, True, (0,), True, "get"),  # GetKQ
    0x01: _kind(Command.SET, False, (8,), True, "store"),
    0x11: _kind(Command.SET, True, (8,), True, "store"),
    0x02: _kind(Command.ADD, False, (8,), True, "store"),
    0x12: _kind(Command.ADD, True, (8,), True, "store"),
    0x03: _kind(Command.REPLACE, False, (8,), True, "store"),
    0x13: _kind(Command.REPLACE, True, (8,), True, "store"),
    0x0E: _kind(Command.APPEND, False, (0,), True, "append"),
    0x19: _kind(Command.APPEND, True, (0,), True, "append"),
    0x0F: _kind(Command.PREPEND, False, (0,), True, "append"),
    0x1A: _kind(Command.PREPEND, True, (0,), True, "append"),
    0x04: _kind(Command.DELETE, False, (0,), True, "delete"),
    0x14: _kind(Command.DELETE, True, (0,), True, "delete"),
    0x05: _kind(Command.INCR, False, (20,), True, "arith"),
    0x15: _kind(Command.INCR, True, (20,), True, "arith"),
    0x06: _kind(Command.DECR, False, (20,), True, "arith"),
    0x16: _kind(Command.DECR, True, (20,), True, "arith"),
    0x07: _kind(Command.QUIT, False, (0,), False, ""),
    0x17: _kind(Command.QUIT, True, (0,), False, ""),
    0x08: _kind(Command.FLUSH_ALL, False, (0, 4), False, ""),
    0x18: _kind(Command.FLUSH_ALL, True, (0, 4), False, ""),
    0x0A: _kind(Command.NOOP, False, (0,), False, ""),
    0x0B: _kind(Command.VERSION, False, (0,), False, ""),
    0x10: _kind(Command.STATS, False, (0,), False, ""),
    0x1B: _kind(Command.VERBOSITY, False, (4,), False, ""),
    0x1C: _kind(Command.TOUCH, False, (4,), True, "touch"),
    0x1D: _kind(Command.GAT, False, (4,), True, "gat"),  # GAT
    0x1E: _kind(Command.GAT, True, (4,), True, "gat"),  # GATQ
    0x23: _kind(Command.GAT, False, (4,), True, "gat"),  # GATK
    0x24: _kind(Command.GAT, True, (4,), True, "gat"),  # GATKQ
    0x20: _kind(Command.OTHER, False, (0,), False, ""),  # SASL list mechanisms
    0x21: _kind(Command.OTHER, False, (0,), False, ""),  # SASL auth
    0x22: _kind(Command.OTHER, False, (0,), False, ""),  # SASL step
}
_UNKNOWN = _kind(Command.OTHER, False, (), False, "")

STATUS_OK = 0x0000
STATUS_KEY_NOT_FOUND = 0x0001
# Error statuses other than "key not found", by what the text protocol would have said.
ERROR_STATUS: dict[int, Reply] = {
    0x0002: Reply.EXISTS,
    0x0003: Reply.SERVER_ERROR,  # value too large ("SERVER_ERROR object too large for cache")
    0x0004: Reply.CLIENT_ERROR,  # invalid arguments
    0x0005: Reply.NOT_STORED,
    0x0006: Reply.CLIENT_ERROR,  # incr/decr on a non-numeric value
    0x0007: Reply.SERVER_ERROR,  # vbucket belongs to another server
    0x0020: Reply.CLIENT_ERROR,  # authentication error
    0x0021: Reply.OTHER,  # authentication continue (a SASL step, not a failure)
    0x0081: Reply.ERROR,  # unknown command
    0x0082: Reply.SERVER_ERROR,  # out of memory
    0x0083: Reply.ERROR,  # not supported
    0x0084: Reply.SERVER_ERROR,  # internal error
    0x0085: Reply.SERVER_ERROR,  # busy
    0x0086: Reply.SERVER_ERROR,  # temporary failure
}

_SUCCESS_REPLY: dict[str, Reply] = {
    "get": Reply.VALUE,
    "gat": Reply.VALUE,
    "store": Reply.STORED,
    "append": Reply.STORED,
    "delete": Reply.DELETED,
    "arith": Reply.NUMBER,
    "touch": Reply.TOUCHED,
}
_SUCCESS_BY_COMMAND: dict[Command, Reply] = {
    Command.QUIT: Reply.OK,
    Command.FLUSH_ALL: Reply.OK,
    Command.VERBOSITY: Reply.OK,
    Command.NOOP: Reply.NOOP,
    Command.VERSION: Reply.VERSION,
}


def _plausible_request(opcode: int, key_length: int, extras_length: int, data_type: int, body: int) -> bool:
    kind = OPCODES.get(opcode)
    if kind is None or data_type != 0 or extras_length not in kind.request_extras:
        return False
    if kind.keyed and not 0 < key_length <= KEY_MAX:
        return False
    return kind.family in ("store", "append") or body == key_length + extras_length or kind.command is Command.OTHER


def _plausible_response(opcode: int, key_length: int, extras_length: int, data_type: int, status: int) -> bool:
    kind = OPCODES.get(opcode)
    if kind is None or data_type != 0 or key_length > KEY_MAX:
        return False
    if status != STATUS_OK and status != STATUS_KEY_NOT_FOUND and status not in ERROR_STATUS:
        return False
    return extras_length == (4 if status == STATUS_OK and kind.family in ("get", "gat") else 0)


class _PacketParser(FramedParser, ABC):
    """Binary packet framing, value countdown and header scanning; subclasses turn a head into an event."""

    __slots__ = ()
    magic = REQUEST_MAGIC

    def __init__(self, stats: ParserStats | None = None, synced: bool = True) -> None:
        super().__init__(stats, synced)
        self.protocol = _BINARY

    def receive(self, data: bytes, timestamp_ns: int) -> list[ParserEvent]:
        events: list[ParserEvent] = []
        if type(data) is not bytes:
            data = bytes(data)
        pos = 0
        if self._remaining:
            pos = self._continue_payload(data, timestamp_ns, events)
        tail_length = len(self._tail)
        tail_ts = self._tail_ts
        if tail_length:
            # A head continues here (never while a payload is pending): one copy of this chunk buys a simple loop.
            data = bytes(self._tail) + data
            self._tail.clear()
        size = len(data)
        unpack = HEADER.unpack_from
        magic = self.magic
        stats = self.stats
        while pos < size:
            start = tail_ts if pos < tail_length else timestamp_ns
            if size - pos < HEADER_SIZE:
                self._keep_tail(data, pos, start)
                break
            header = unpack(data, pos)
            body = header[6]
            if not self._synced or header[0] != magic or header[3] + header[2] > body or body > BODY_MAX:
                pos = self._resync(data, pos, tail_length, tail_ts, timestamp_ns, events)
                continue
            total = HEADER_SIZE + body
            if pos + total <= size:
                stats.bytes_parsed += total
                events.append(self._unit(header, data, pos, start, timestamp_ns))
                pos += total
            elif pos + HEADER_SIZE + header[3] + header[2] <= size:
                self._start_payload(self._unit(header, data, pos, start, timestamp_ns), size - pos,
                                    pos + total - size)
                break
            else:
                self._keep_tail(data, pos, start)
                break
        return events

    def sync_offset(self, data: bytes) -> int | None:
        """Where the first strictly plausible header of `data` starts (for protocol detection)."""
        pos = data.find(self.magic)
        while 0 <= pos <= len(data) - HEADER_SIZE:
            if self._plausible(HEADER.unpack_from(data, pos)):
                return pos
            pos = data.find(self.magic, pos + 1)
        return None

    def chained(self, data: bytes, at: int) -> bool:
        """Whether the packet whose header is at `at` ends exactly at the end of `data` or at another plausible
        header: evidence, beyond one header, that `data` really is binary traffic."""
        after = at + HEADER_SIZE + HEADER.unpack_from(data, at)[6]
        if after == len(data):
            return True
        return after + HEADER_SIZE <= len(data) and self._plausible(HEADER.unpack_from(data, after))

    def _keep_tail(self, data: bytes, pos: int, start: int) -> None:
        self._tail += data[pos:]
        self._tail_ts = start

    def _resync(self, data: bytes, pos: int, tail_length: int, tail_ts: int, timestamp_ns: int,
                events: list[ParserEvent]) -> int:
        """Skip to the next strictly plausible header after `pos`, or keep a possible header's prefix as tail."""
        if self._synced:
            self.stats.errors += 1
            self._lose_sync()
            reason = "bad_header"
            candidate = pos + 1  # the header at pos was just found wrong
        else:
            reason = "resync"
            candidate = pos
        size = len(data)
        magic = self.magic
        while True:
            candidate = data.find(magic, candidate)
            if candidate < 0:
                self._skip_seen(size - pos, reason)
                return size
            if size - candidate < HEADER_SIZE:
                self._skip_seen(candidate - pos, reason)
                self._keep_tail(data, candidate, tail_ts if candidate < tail_length else timestamp_ns)
                return size
            if self._plausible(HEADER.unpack_from(data, candidate)):
                self._skip_seen(candidate - pos, reason)
                self._flush_skip(timestamp_ns, events)
                self._synced = True
                return candidate
            candidate += 1

    @abstractmethod
    def _plausible(self, header: tuple[int, ...]) -> bool:
        """Whether a header passes the strict checks that a resync demands."""

    @abstractmethod
    def _unit(self, header: tuple[int, ...], data: bytes, at: int, start: int, end: int) -> Request | Response:
        """The event of the packet whose header is at `at` of `data` (its extras and key follow it there)."""


class BinaryRequestParser(_PacketParser):
    """Client -> server bytes of a binary connection: one Request per packet."""

    __slots__ = ()
    magic = REQUEST_MAGIC

    def _plausible(self, header: tuple[int, ...]) -> bool:
        return header[0] == REQUEST_MAGIC and _plausible_request(header[1], header[2], header[3], header[4],
                                                                  header[6])

    def _unit(self, header: tuple[int, ...], data: bytes, at: int, start: int, end: int) -> Request:
        _, opcode, key_length, extras_length, _, _, body, opaque, cas = header
        kind = OPCODES.get(opcode, _UNKNOWN)
        extras_at = at + HEADER_SIZE
        key_at = extras_at + extras_length
        keys = (data[key_at:key_at + key_length],) if kind.keyed and key_length else ()
        family = kind.family
        value_length = flags = ttl = delta = initial = None
        if family == "store" and extras_length == 8:
            flags, ttl = _STORE_EXTRAS.unpack_from(data, extras_at)
            value_length = body - extras_length - key_length
        elif family == "append":
            value_length = body - extras_length - key_length
        elif family == "arith" and extras_length == 20:
            delta, first_value, ttl = _ARITHMETIC_EXTRAS.unpack_from(data, extras_at)
            if ttl != _NO_AUTOVIVIFY:
                initial = first_value  # memcached creates a missing key with this value
        elif (family == "touch" or family == "gat") and extras_length == 4:
            ttl = _UINT32.unpack_from(data, extras_at)[0]
        command = kind.command
        if cas and command in _CAS_CAPABLE:
            command = _CAS  # a binary set or replace with a unique is a compare-and-swap (memcached counts it so)
        return request(protocol=_BINARY, command=command, keys=keys, value_length=value_length, flags=flags, ttl=ttl,
                       quiet=kind.quiet, opaque=opaque, start_ns=start, end_ns=end, delta=delta, initial=initial,
                       binary_opcode=opcode)


class BinaryResponseParser(_PacketParser):
    """Server -> client bytes of a binary connection: one Response per packet (a stats reply is many)."""

    __slots__ = ()
    magic = RESPONSE_MAGIC

    def _plausible(self, header: tuple[int, ...]) -> bool:
        return header[0] == RESPONSE_MAGIC and _plausible_response(header[1], header[2], header[3], header[4],
                                                                    header[5])

    def _unit(self, header: tuple[int, ...], data: bytes, at: int, start: int, end: int) -> Response:
        _, opcode, key_length, extras_length, _, status, body, opaque, cas = header
        kind = OPCODES.get(opcode, _UNKNOWN)
        family = kind.family
        key_at = at + HEADER_SIZE + extras_length
        key = data[key_at:key_at + key_length] if kind.keyed and key_length else None
        value_length = flags = None
        if status == STATUS_OK:
            reply = _SUCCESS_REPLY.get(family)
            if reply is _VALUE:
                value_length = body - extras_length - key_length
                if extras_length == 4:
                    flags = _UINT32.unpack_from(data, at + HEADER_SIZE)[0]
            elif reply is None:
                if kind.command is _STATS:
                    reply = _STAT if key_length else _END
                else:
                    reply = _SUCCESS_BY_COMMAND.get(kind.command, _OTHER_REPLY)
        elif status == STATUS_KEY_NOT_FOUND:
            reply = _MISS if family == "get" or family == "gat" else _NOT_FOUND
        else:
            reply = ERROR_STATUS.get(status, _SERVER_ERROR)
        return response(protocol=_BINARY, reply=reply, key=key, value_length=value_length, flags=flags,
                        opaque=opaque, binary_opcode=opcode, binary_status=status, start_ns=start, end_ns=end,
                        cas=cas or None)
