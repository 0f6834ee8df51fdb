"""Sans-IO parsers for the text protocol and the meta commands, which share its framing: lines and data blocks.

A line ends at `\\n` (memcached accepts a bare `\\n` as well as `\\r\\n`); a storage command or a VALUE/VA reply
is followed by a data block of the announced length plus `\\r\\n`, which is counted, never searched, exactly as
memcached itself reads it. Only lines are buffered: a line is bounded (8 KiB; 1 MiB for a retrieval command,
whose key list may legitimately be long) and anything longer is garbage.

Decisions where the protocol leaves room:
- memcached answers every line it cannot execute (an unknown command, a known one with bad arguments, an empty
  line, a typo typed in telnet) with one ERROR or CLIENT_ERROR line. Such a line, if it is printable text, is a
  `Request` with `Command.OTHER`, so pairing consumes that error reply instead of shifting every later match.
  A line with control bytes is not something a client typed but a sign that the framing is lost (e.g. we are
  inside a data block): it is `Skipped` ("bad_line") and the parser resynchronizes.
- Likewise a printable reply line that is not modelled (ITEM, RESET, BUSY, `key=value` dumps) is a Response with
  `Reply.OTHER`.
- While resynchronizing (after a hole, garbage, or when joining a connection mid-stream) only lines that are
  strictly valid count: a known command (or reply) with well-formed arguments. OTHER lines and bare numbers are
  not trusted there, since the tail of a data block looks just like them.
"""

from __future__ import annotations

import binascii
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, NamedTuple

from membench.protocol.events import Command, ParserEvent, Protocol, Reply, Request, Response
from membench.protocol.framing import FramedParser, ParserStats

KEY_MAX = 250  # memcached's KEY_MAX_LENGTH: longer keys get CLIENT_ERROR
BASE64_KEY_MAX = 4 * ((KEY_MAX + 2) // 3)
LINE_MAX = 8192
RETRIEVAL_LINE_MAX = 1 << 20
_UINT32_MAX = (1 << 32) - 1
_INT32_MAX = (1 << 31) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

_TEXT = Protocol.TEXT
_META = Protocol.META
# NamedTuple's generated __new__ is a Python function; building the tuple directly saves that call per unit.
_new = tuple.__new__
_CAS = Command.CAS  # an enum member looked up on its class costs a Python-level attribute access every time
_NOREPLY = b"noreply"
_RETRIEVAL_PREFIXES = (b"get ", b"gets ", b"gat ", b"gats ")
# Bytes no client types into a command line; `\r` is allowed only as the line ending, which split() drops.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

RequestHandler = Callable[[list[bytes], Command, int, int], Request | None]
ResponseHandler = Callable[[list[bytes], Reply, int, int], Response | None]
Handlers = dict[bytes, tuple[RequestHandler, Command]] | dict[bytes, tuple[ResponseHandler, Reply]]


def _is_printable(line: bytes) -> bool:
    if line.endswith(b"\r"):
        line = line[:-1]
    return _CONTROL.search(line) is None


def _keys_ok(keys: tuple[bytes, ...]) -> bool:
    return max(map(len, keys)) <= KEY_MAX


def _data_length(token: bytes) -> int | None:
    """The data block length memcached reads from a storage line, or None if it rejects the line.

    memcached parses the number with strtol into an int32: past int64 the line is refused, otherwise only the low
    32 bits count (`set k 0 0 4294967299` stores 3 bytes), and a negative result or one above INT_MAX - 2 is
    refused. A refused line has no data block: memcached reads what follows as the next command.
    """
    try:
        number = int(token)
    except ValueError:
        return None
    if not _INT64_MIN <= number <= _INT64_MAX:
        return None
    length = ((number + (1 << 31)) & _UINT32_MAX) - (1 << 31)
    return length if 0 <= length <= _INT32_MAX - 2 else None


# Request handlers: tokens of the line (command word first) -> the Request, or None if memcached would reject it.

def _retrieval(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    n = len(t)
    if n == 2:  # the common single-key get, without the general loop
        keys: tuple[bytes, ...] = (t[1],)
        if len(t[1]) > KEY_MAX:
            return None
    elif n < 2:
        return None
    else:
        keys = tuple(t[1:])
        if not _keys_ok(keys):
            return None
    return _new(Request, (_TEXT, command, keys, None, None, None, False, False, None, b"", start, end))


def _get_and_touch(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    if len(t) < 3:
        return None
    try:
        ttl = int(t[1])
    except ValueError:
        return None
    keys = tuple(t[2:])
    if not _keys_ok(keys):
        return None
    return _new(Request, (_TEXT, command, keys, None, None, ttl, False, False, None, b"", start, end))


def _storage(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    # <cmd> <key> <flags> <exptime> <bytes> [<cas unique>] [noreply]; memcached ignores a last token that is
    # not "noreply", so "set k 0 0 3 junk" stores.
    n = len(t)
    fixed = 6 if command is _CAS else 5
    if n != fixed and n != fixed + 1:
        return None
    key = t[1]
    try:
        flags = int(t[2])
        ttl = int(t[3])
        if fixed == 6:
            int(t[5])
    except ValueError:
        return None
    length = _data_length(t[4])
    if length is None or not 0 <= flags <= _UINT32_MAX or not _INT64_MIN <= ttl <= _INT64_MAX or len(key) > KEY_MAX:
        return None
    noreply = n > fixed and t[-1] == _NOREPLY
    return _new(Request, (_TEXT, command, (key,), length, flags, ttl, noreply, False, None, b"", start, end))


def _delete(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    # delete <key> [0] [noreply]: the legacy hold time is accepted only as "0".
    n = len(t)
    if n == 2:
        noreply = False
    elif n == 3 and t[2] in (b"0", _NOREPLY):
        noreply = t[2] == _NOREPLY
    elif n == 4 and t[2] == b"0" and t[3] == _NOREPLY:
        noreply = True
    else:
        return None
    if len(t[1]) > KEY_MAX:
        return None
    return _new(Request, (_TEXT, command, (t[1],), None, None, None, noreply, False, None, b"", start, end))


def _arithmetic(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    n = len(t)
    if (n != 3 and n != 4) or not t[2].isdigit() or len(t[1]) > KEY_MAX:
        return None
    noreply = n == 4 and t[3] == _NOREPLY
    return _new(Request, (_TEXT, command, (t[1],), None, None, None, noreply, False, None, b"", start, end))


def _touch(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    n = len(t)
    if (n != 3 and n != 4) or len(t[1]) > KEY_MAX:
        return None
    try:
        ttl = int(t[2])
    except ValueError:
        return None
    noreply = n == 4 and t[3] == _NOREPLY
    return _new(Request, (_TEXT, command, (t[1],), None, None, ttl, noreply, False, None, b"", start, end))


def _keyless(t: list[bytes], command: Command, start: int, end: int, low: int, high: int) -> Request | None:
    n = len(t)
    if n < low or n > high:
        return None
    noreply = n > 1 and t[-1] == _NOREPLY
    return _new(Request, (_TEXT, command, (), None, None, None, noreply, False, None, b"", start, end))


def _flush_all(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    return _keyless(t, command, start, end, 1, 3)


def _verbosity(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    return _keyless(t, command, start, end, 2, 3)


def _no_arguments(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    return _keyless(t, command, start, end, 1, 1)


def _stats(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    # stats arguments name a stats group, never a cache key
    return _new(Request, (_TEXT, command, (), None, None, None, False, False, None, b"", start, end))


class _MetaFlags(NamedTuple):
    """What membench reads from a meta command's flag tokens."""

    quiet: bool
    opaque: bytes | None
    ttl: int | None
    flags: int | None  # client flags (F); may exceed 32 bits, which memcached accepts and the profile clamps
    base64: bool
    letters: bytes  # every flag's letter, in order
    valid: bool  # False if a numeric token is not a number memcached takes: it then answers CLIENT_ERROR


def _meta_flags(t: list[bytes], first: int) -> _MetaFlags:
    quiet = base64 = False
    valid = True
    opaque: bytes | None = None
    ttl: int | None = None
    flags: int | None = None
    tokens = t[first:]
    for token in tokens:
        flag = token[0]
        if flag == 113:  # q
            quiet = True
        elif flag == 79:  # O
            opaque = token[1:]
        elif flag == 98:  # b
            base64 = True
        elif flag == 84 or flag == 70:  # T, F
            try:
                number = int(token[1:])
            except ValueError:
                valid = False
                continue
            if flag == 84:
                ttl = number
            elif number >= 0:
                flags = number
            else:
                valid = False
    return _MetaFlags(quiet, opaque, ttl, flags, base64, bytes(token[0] for token in tokens), valid)


def _meta_key(key: bytes, base64: bool) -> bytes | None:
    """The key memcached looks up (a `b` key decoded), or None if memcached refuses it with CLIENT_ERROR."""
    if not base64:
        return key if len(key) <= KEY_MAX else None
    if len(key) > BASE64_KEY_MAX or len(key) % 4:
        return None
    padding = key.find(b"=")
    if padding >= 0:
        key = key[:padding // 4 * 4 + 4]  # memcached's decoder stops at the group that holds padding
    try:
        return binascii.a2b_base64(key, strict_mode=True) or None
    except binascii.Error:
        return None


def _meta_keyed(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    # mg / md / ma / me <key> <flags>*
    if len(t) < 2:
        return None
    parsed = _meta_flags(t, 2)
    key = _meta_key(t[1], parsed.base64)
    if key is None or not parsed.valid:
        return None
    return _new(Request, (_META, command, (key,), None, None, parsed.ttl, False, parsed.quiet, parsed.opaque,
                          parsed.letters, start, end))


def _meta_set(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    # ms <key> <datalen> <flags>*; memcached 1.6 rejects the older `S<datalen>` flag form, and so do we.
    if len(t) < 3:
        return None
    length = _data_length(t[2])
    if length is None:
        return None
    parsed = _meta_flags(t, 3)
    # A bad key or flag token gets CLIENT_ERROR but memcached still reads (and drops) the data block, so the
    # command stays a set with its data; a refused key is kept as sent, since memcached never looked it up.
    key = _meta_key(t[1], parsed.base64) or t[1]
    # Unset F and T store 0, as memcached does.
    return _new(Request, (_META, command, (key,), length, parsed.flags or 0, parsed.ttl or 0, False, parsed.quiet,
                          parsed.opaque, parsed.letters, start, end))


def _meta_noop(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    return _new(Request, (_META, command, (), None, None, None, False, False, None, b"", start, end))


REQUEST_HANDLERS: dict[bytes, tuple[RequestHandler, Command]] = {
    b"get": (_retrieval, Command.GET),
    b"gets": (_retrieval, Command.GETS),
    b"gat": (_get_and_touch, Command.GAT),
    b"gats": (_get_and_touch, Command.GATS),
    b"set": (_storage, Command.SET),
    b"add": (_storage, Command.ADD),
    b"replace": (_storage, Command.REPLACE),
    b"append": (_storage, Command.APPEND),
    b"prepend": (_storage, Command.PREPEND),
    b"cas": (_storage, Command.CAS),
    b"delete": (_delete, Command.DELETE),
    b"incr": (_arithmetic, Command.INCR),
    b"decr": (_arithmetic, Command.DECR),
    b"touch": (_touch, Command.TOUCH),
    b"flush_all": (_flush_all, Command.FLUSH_ALL),
    b"version": (_no_arguments, Command.VERSION),
    b"stats": (_stats, Command.STATS),
    b"verbosity": (_verbosity, Command.VERBOSITY),
    b"quit": (_no_arguments, Command.QUIT),
    b"mg": (_meta_keyed, Command.META_GET),
    b"ms": (_meta_set, Command.META_SET),
    b"md": (_meta_keyed, Command.META_DELETE),
    b"ma": (_meta_keyed, Command.META_ARITHMETIC),
    b"mn": (_meta_noop, Command.META_NOOP),
    b"me": (_meta_keyed, Command.META_DEBUG),
}

# Commands membench does not model that still honour `noreply` (memcached sends nothing back for them).
_OTHER_WITH_NOREPLY = frozenset({b"cache_memlimit"})


# Response handlers: tokens of the reply line -> the Response, or None if the line is not that reply.

def _value(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    # VALUE <key> <flags> <bytes> [<cas unique>]
    n = len(t)
    if n != 4 and n != 5:
        return None
    try:
        flags = int(t[2])
        length = int(t[3])
    except ValueError:
        return None
    if length < 0 or flags < 0:
        return None
    return _new(Response, (_TEXT, reply, t[1], length, flags, None, None, None, start, end))


def _bare(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    if len(t) != 1:
        return None
    return _new(Response, (_TEXT, reply, None, None, None, None, None, None, start, end))


def _with_text(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    # ERROR [message], CLIENT_ERROR <message>, SERVER_ERROR <message>
    return _new(Response, (_TEXT, reply, None, None, None, None, None, None, start, end))


def _with_argument(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    # VERSION <version>, STAT <name> <value>
    if len(t) < 2:
        return None
    return _new(Response, (_TEXT, reply, None, None, None, None, None, None, start, end))


def _meta_return_flags(t: list[bytes], first: int) -> tuple[bytes | None, bytes | None, int | None] | None:
    """(opaque, key, client flags) returned in meta reply flags, or None if a numeric token is bad."""
    opaque: bytes | None = None
    key: bytes | None = None
    flags: int | None = None
    base64 = False
    for token in t[first:]:
        flag = token[0]
        if flag == 79:  # O
            opaque = token[1:]
        elif flag == 107:  # k
            key = token[1:]
        elif flag == 98:  # b: the returned key is base64
            base64 = True
        elif flag == 102:  # f
            try:
                flags = int(token[1:])
            except ValueError:
                return None
    if base64 and key is not None:
        key = _meta_key(key, True)
    return opaque, key, flags


def _meta_value(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    # VA <size> <flags>*
    if len(t) < 2:
        return None
    try:
        length = int(t[1])
    except ValueError:
        return None
    returned = _meta_return_flags(t, 2)
    if returned is None or length < 0:
        return None
    opaque, key, flags = returned
    return _new(Response, (_META, reply, key, length, flags, opaque, None, None, start, end))


def _meta_status(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    # HD / EN / NF / NS / EX <flags>*
    returned = _meta_return_flags(t, 1)
    if returned is None:
        return None
    opaque, key, flags = returned
    return _new(Response, (_META, reply, key, None, flags, opaque, None, None, start, end))


def _meta_noop_reply(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    if len(t) != 1:
        return None
    return _new(Response, (_META, reply, None, None, None, None, None, None, start, end))


def _meta_debug_reply(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    # ME <key> <k>=<v>*
    if len(t) < 2:
        return None
    return _new(Response, (_META, reply, t[1], None, None, None, None, None, start, end))


RESPONSE_HANDLERS: dict[bytes, tuple[ResponseHandler, Reply]] = {
    b"VALUE": (_value, Reply.VALUE),
    b"END": (_bare, Reply.END),
    b"STORED": (_bare, Reply.STORED),
    b"NOT_STORED": (_bare, Reply.NOT_STORED),
    b"EXISTS": (_bare, Reply.EXISTS),
    b"NOT_FOUND": (_bare, Reply.NOT_FOUND),
    b"DELETED": (_bare, Reply.DELETED),
    b"TOUCHED": (_bare, Reply.TOUCHED),
    b"OK": (_bare, Reply.OK),
    b"VERSION": (_with_argument, Reply.VERSION),
    b"STAT": (_with_argument, Reply.STAT),
    b"ERROR": (_with_text, Reply.ERROR),
    b"CLIENT_ERROR": (_with_text, Reply.CLIENT_ERROR),
    b"SERVER_ERROR": (_with_text, Reply.SERVER_ERROR),
    b"VA": (_meta_value, Reply.VALUE),
    b"HD": (_meta_status, Reply.HD),
    b"EN": (_meta_status, Reply.MISS),
    b"NF": (_meta_status, Reply.NOT_FOUND),
    b"NS": (_meta_status, Reply.NOT_STORED),
    b"EX": (_meta_status, Reply.EXISTS),
    b"MN": (_meta_noop_reply, Reply.NOOP),
    b"ME": (_meta_debug_reply, Reply.DEBUG),
}


class _LineParser(FramedParser, ABC):
    """Line framing, data block countdown and resynchronization; subclasses say what a line means."""

    __slots__ = ("_discarding",)
    _handlers: ClassVar[Handlers]  # a line's first word -> the handler that makes its unit, and what it passes

    def __init__(self, stats: ParserStats | None = None, synced: bool = True) -> None:
        super().__init__(stats, synced)
        self.protocol = _TEXT
        self._discarding = False  # inside an over-long line, dropping bytes up to its newline

    def receive(self, data: bytes, timestamp_ns: int) -> list[ParserEvent]:
        events: list[ParserEvent] = []
        if type(data) is not bytes:
            data = bytes(data)
        size = len(data)
        pos = 0
        if self._remaining or self._discarding or self._tail:
            pos = self._resume(data, timestamp_ns, events)
        # The loop below is the hot path of a recording: it handles a complete, valid, in-sync line inline (most
        # lines are) and leaves every other case to `_line`, which parses the line again on its own terms.
        find = data.find
        handlers = self._handlers
        append = events.append
        synced = self._synced
        parsed = 0
        while pos < size:
            newline = find(b"\n", pos)
            if newline < 0:
                self._tail += data[pos:]
                self._tail_ts = timestamp_ns
                self._check_tail_bound()
                break
            tokens = data[pos:newline].split()
            # What `_parse` does for a known first word, without its call.
            entry = handlers.get(tokens[0]) if synced and tokens and newline - pos <= LINE_MAX else None
            unit = None if entry is None else entry[0](tokens, entry[1], timestamp_ns, timestamp_ns)
            if unit is None:
                pos = self._line(data[pos:newline], timestamp_ns, newline + 1, data, timestamp_ns, events)
                if self._remaining:
                    break
                synced = self._synced
                continue
            if unit.protocol is _META:
                self.protocol = _META
            after = newline + 1
            length = unit.value_length
            if length is None:
                parsed += after - pos
                append(unit)
                pos = after
                continue
            end = after + length + 2
            if end > size:
                self._start_payload(unit, size - pos, end - size)
                break
            parsed += end - pos
            append(unit)
            pos = end
        self.stats.bytes_parsed += parsed
        return events

    def _resume(self, data: bytes, timestamp_ns: int, events: list[ParserEvent]) -> int:
        """Finish what the previous chunk left open (a payload, an over-long line, a partial line); returns where
        parsing of `data` continues (its end if nothing of it is left)."""
        size = len(data)
        pos = 0
        if self._remaining:
            pos = self._continue_payload(data, timestamp_ns, events)
            if self._remaining:
                return size
        if self._discarding and pos < size:
            newline = data.find(b"\n", pos)
            end = size if newline < 0 else newline + 1
            self._skip_seen(end - pos, "line_too_long")
            self._discarding = newline < 0
            pos = end
        if self._tail and pos < size:
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._tail += data[pos:]
                self._check_tail_bound()
                return size
            self._tail += data[pos:newline]
            line = bytes(self._tail)
            self._tail.clear()
            pos = self._line(line, self._tail_ts, newline + 1, data, timestamp_ns, events)
            if self._remaining:
                return size
        return pos

    def receive_hole(self, length: int, timestamp_ns: int) -> list[ParserEvent]:
        if length > 0 and not self._remaining:
            self._discarding = False
        return super().receive_hole(length, timestamp_ns)

    def sync_offset(self, data: bytes) -> int | None:
        """Where the first strictly valid line of `data` starts, if one is complete in it (for detection)."""
        pos = 0
        while True:
            newline = data.find(b"\n", pos)
            if newline < 0:
                return None
            tokens = data[pos:newline].split()
            if tokens and self._parse(tokens, 0, 0, True) is not None:
                return pos
            pos = newline + 1

    def _line(self, line: bytes, start: int, after: int, data: bytes, timestamp_ns: int,
              events: list[ParserEvent]) -> int:
        """Handle one complete line ending just before `after` in `data`; returns where parsing continues."""
        if len(line) > LINE_MAX and self._too_long(line):
            self._skip_garbage(len(line) + 1, "line_too_long")
            return after
        tokens = line.split()
        synced = self._synced
        unit = self._parse(tokens, start, timestamp_ns, not synced) if tokens else None
        if unit is None:
            if synced and _is_printable(line):
                unit = self._other(tokens, start, timestamp_ns)
            else:
                self._skip_garbage(len(line) + 1, "bad_line")
                return after
        elif not synced:
            self._synced = True
            self._flush_skip(timestamp_ns, events)
        head = len(line) + 1
        length = unit.value_length
        if length is None:
            self.stats.bytes_parsed += head
            events.append(unit)
            return after
        end = after + length + 2
        if end <= len(data):
            self.stats.bytes_parsed += head + length + 2
            events.append(unit)
            return end
        seen = len(data) - after
        self._start_payload(unit, head + seen, end - len(data))
        return len(data)

    def _skip_garbage(self, length: int, reason: str) -> None:
        """A line that is no unit: while in sync it is an error that costs the sync, while resyncing it is expected."""
        if self._synced:
            self.stats.errors += 1
            self._lose_sync()
            self._skip_seen(length, reason)
        else:
            self._skip_seen(length, "resync")

    def _check_tail_bound(self) -> None:
        """A partial line over the bound is garbage: drop it now and the rest of it up to its newline later."""
        tail = self._tail
        if len(tail) > LINE_MAX and self._too_long(tail):
            self._skip_garbage(len(tail), "line_too_long")
            self._discarding = True
            tail.clear()

    def _too_long(self, line: bytes | bytearray) -> bool:
        return len(line) > RETRIEVAL_LINE_MAX or not self._long_line_allowed(line)

    def _long_line_allowed(self, line: bytes | bytearray) -> bool:
        return False

    def _parse(self, tokens: list[bytes], start: int, end: int, strict: bool) -> Request | Response | None:
        """The unit a line's tokens make, or None if invalid; `strict` also refuses the weakly typed forms."""
        entry = self._handlers.get(tokens[0])
        if entry is None:
            return self._unknown_word(tokens, start, end, strict)
        handler, kind = entry
        unit = handler(tokens, kind, start, end)
        if unit is not None and unit.protocol is _META:
            self.protocol = _META
        return unit

    @abstractmethod
    def _unknown_word(self, tokens: list[bytes], start: int, end: int, strict: bool) -> Request | Response | None:
        """The unit of a line whose first word has no handler, or None if it is invalid."""

    @abstractmethod
    def _other(self, tokens: list[bytes], start: int, end: int) -> Request | Response:
        """The unit of a printable line that is not a valid known command or reply."""


class TextRequestParser(_LineParser):
    """Client -> server bytes of a text/meta connection. `protocol` turns META once a meta command is seen."""

    __slots__ = ()
    _handlers = REQUEST_HANDLERS

    def _unknown_word(self, tokens: list[bytes], start: int, end: int, strict: bool) -> Request | None:
        return None

    def _other(self, tokens: list[bytes], start: int, end: int) -> Request:
        noreply = len(tokens) > 1 and tokens[0] in _OTHER_WITH_NOREPLY and tokens[-1] == _NOREPLY
        return _new(Request, (_TEXT, Command.OTHER, (), None, None, None, noreply, False, None, b"", start, end))

    def _long_line_allowed(self, line: bytes | bytearray) -> bool:
        return line.startswith(_RETRIEVAL_PREFIXES)


class TextResponseParser(_LineParser):
    """Server -> client bytes of a text/meta connection. `protocol` turns META once a meta reply is seen."""

    __slots__ = ()
    _handlers = RESPONSE_HANDLERS

    def _unknown_word(self, tokens: list[bytes], start: int, end: int, strict: bool) -> Response | None:
        # An incr/decr result is a bare number: trusted in sync only, since data blocks are full of numbers.
        if not strict and len(tokens) == 1 and tokens[0].isdigit():
            return _new(Response, (_TEXT, Reply.NUMBER, None, None, None, None, None, None, start, end))
        return None

    def _other(self, tokens: list[bytes], start: int, end: int) -> Response:
        return _new(Response, (_TEXT, Reply.OTHER, None, None, None, None, None, None, start, end))
