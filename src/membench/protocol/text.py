"""Sans-IO parsers for the text protocol and the meta commands, which share its framing: lines and data blocks.

A line ends at `\\n` (memcached accepts a bare `\\n` as well as `\\r\\n`); a storage command or a VALUE/VA reply
is followed by a data block of the announced length plus `\\r\\n`, which is counted, never searched, exactly as
memcached itself reads it. Only lines are buffered: a line is bounded (8 KiB; 1 MiB for a retrieval command,
whose key list may legitimately be long: get, gets) and anything longer is garbage.

Decisions where the protocol leaves room:
- memcached answers every line it cannot execute (an unknown command, a known one with bad arguments, an empty
  line, a typo typed in telnet, bytes that are no text at all) with one ERROR or CLIENT_ERROR line. While the
  request parser is in sync, such a line is a `Request` with `Command.OTHER`, whatever bytes it holds, so pairing
  consumes that error reply instead of shifting every later match. In sync means the parser has framed every
  byte since the stream's start (or since a strictly valid line ended a resynchronization) exactly as memcached
  frames it, lines and counted data blocks alike, so the line is the very one memcached read as a command: that
  it holds control bytes says nothing about the framing. Out of sync (after a hole, or when joining mid-stream)
  nothing says where a command starts, and a line is trusted only if it is strictly valid (below).
- memcached reads a command line as a C string, so it ends at the first NUL: `get a\0b` looks up `a`, and
  `set a\0b 0 0 1` is `set a`, an ERROR with no data block. The request parser reads its lines the same way.
- A reply line is written by memcached, which never puts control bytes in one: a reply line with control bytes
  means the framing is lost (e.g. a data block was miscounted), so it is `Skipped` ("bad_line") and the response
  parser resynchronizes. A printable reply line that is not modelled (ITEM, RESET, BUSY, `key=value` dumps) is a
  Response with `Reply.OTHER`.
- A line over the bound is dropped and costs the sync, in either direction. memcached answers a long command
  line only if it came whole in one read of its 16 KiB buffer; once it holds 2048 bytes with no newline it closes
  the connection (unless the line is a `get`/`gets`), and no reply is left to pair. Only an 8-16 KiB line that
  reached memcached in one read gets an ERROR this parser does not pair.
- While resynchronizing (after a hole, garbage, or when joining a connection mid-stream) only lines that are
  strictly valid count: a known command (or reply) with well-formed arguments. OTHER lines and bare numbers are
  not trusted there, since the tail of a data block looks just like them.

What a line means is decided in text_commands.py (text commands and replies) and meta.py (meta ones).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import ClassVar

from membench.protocol.events import Command, ParserEvent, Protocol, Reply, Request, Response, request, response
from membench.protocol.framing import FramedParser, ParserStats
from membench.protocol.meta import META_REQUEST_HANDLERS, META_RESPONSE_HANDLERS
from membench.protocol.text_commands import (
    TEXT_REQUEST_HANDLERS,
    TEXT_RESPONSE_HANDLERS,
    RequestHandler,
    ResponseHandler,
)

LINE_MAX = 8192
RETRIEVAL_LINE_MAX = 1 << 20

_TEXT = Protocol.TEXT
_META = Protocol.META
_NOREPLY = b"noreply"
_END_SIZE = len(b"END\r\n")
_SHORTEST_VALUE = len(b"VALUE k 0 0\r\n\r\n")
# The commands whose line memcached reads past 2048 bytes without a newline (a long multi-get); on any other, gat
# and gats included, it closes the connection.
_RETRIEVAL_PREFIXES = (b"get ", b"gets ")
# Bytes memcached never writes into a reply line; `\r` is allowed only as the line ending.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_NUL = b"\0"

Handlers = dict[bytes, tuple[RequestHandler, Command]] | dict[bytes, tuple[ResponseHandler, Reply]]

REQUEST_HANDLERS: dict[bytes, tuple[RequestHandler, Command]] = {**TEXT_REQUEST_HANDLERS, **META_REQUEST_HANDLERS}
RESPONSE_HANDLERS: dict[bytes, tuple[ResponseHandler, Reply]] = {**TEXT_RESPONSE_HANDLERS, **META_RESPONSE_HANDLERS}

# Commands membench does not model that still honour `noreply` (memcached sends nothing back for them).
_OTHER_WITH_NOREPLY = frozenset({b"cache_memlimit"})


def without_ending(line: bytes) -> bytes:
    """A line (its `\n` gone) as memcached reads it: without the `\r` that ends it, unless that is all it holds."""
    return line[:-1] if len(line) > 1 and line[-1] == 13 else line


def words(line: bytes) -> list[bytes]:
    """A line's tokens as memcached's tokenizer cuts them: at spaces only, so a tab is part of a key."""
    parts = line.split(b" ")
    return [word for word in parts if word] if b"" in parts else parts  # runs of spaces are rare


def _is_printable(line: bytes) -> bool:
    if line.endswith(b"\r"):
        line = line[:-1]
    return _CONTROL.search(line) is None


class _LineParser(FramedParser, ABC):
    """Line framing, data block countdown and resynchronization; subclasses say what a line means."""

    __slots__ = ("_discarding",)
    _handlers: ClassVar[Handlers]  # a line's first word -> the handler that makes its unit, and what it passes
    _nul_ends_line: ClassVar[bool] = False  # lines are read as C strings, as memcached reads its commands

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
        # Lines holding a NUL take the slow path, which cuts them there; one search of the chunk spares the rest.
        cuts = self._nul_ends_line and _NUL in data
        while pos < size:
            newline = find(b"\n", pos)
            if newline < 0:
                self._tail += data[pos:]
                self._tail_ts = timestamp_ns
                self._check_tail_bound()
                break
            tokens = words(without_ending(data[pos:newline]))
            # What `_parse` does for a known first word, without its call.
            entry = (handlers.get(tokens[0]) if synced and tokens and newline - pos <= LINE_MAX
                     and not (cuts and find(_NUL, pos, newline) >= 0) else None)
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
            tokens = self._words(data[pos:newline])
            if tokens and self._parse(tokens, 0, 0, True) is not None:
                return pos
            pos = newline + 1

    def _line(self, line: bytes, start: int, after: int, data: bytes, timestamp_ns: int,
              events: list[ParserEvent]) -> int:
        """Handle one complete line ending just before `after` in `data`; returns where parsing continues."""
        if len(line) > LINE_MAX and self._too_long(line):
            self._skip_garbage(len(line) + 1, "line_too_long")
            return after
        tokens = self._words(line)
        synced = self._synced
        unit = self._parse(tokens, start, timestamp_ns, not synced) if tokens else None
        if unit is None:
            if synced and self._stands_for_unit(line):
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

    def _words(self, line: bytes) -> list[bytes]:
        """The tokens of a line, as the side that reads it takes them."""
        line = without_ending(line)
        if self._nul_ends_line:
            cut = line.find(_NUL)
            if cut >= 0:
                line = line[:cut]
        return words(line)

    def _stands_for_unit(self, line: bytes) -> bool:
        """Whether a line that is no valid unit still takes a unit's place while in sync (see the module doc)."""
        return _is_printable(line)

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
    _nul_ends_line = True

    def _stands_for_unit(self, line: bytes) -> bool:
        # memcached answers every command line it reads, garbage included, with exactly one error line.
        return True

    def _unknown_word(self, tokens: list[bytes], start: int, end: int, strict: bool) -> Request | None:
        return None

    def _other(self, tokens: list[bytes], start: int, end: int) -> Request:
        noreply = len(tokens) > 1 and tokens[0] in _OTHER_WITH_NOREPLY and tokens[-1] == _NOREPLY
        return request(protocol=_TEXT, command=Command.OTHER, noreply=noreply, start_ns=start, end_ns=end)

    def _long_line_allowed(self, line: bytes | bytearray) -> bool:
        return line.startswith(_RETRIEVAL_PREFIXES)


class TextResponseParser(_LineParser):
    """Server -> client bytes of a text/meta connection. `protocol` turns META once a meta reply is seen."""

    __slots__ = ()
    _handlers = RESPONSE_HANDLERS

    def _unknown_word(self, tokens: list[bytes], start: int, end: int, strict: bool) -> Response | None:
        # An incr/decr result is a bare number: trusted in sync only, since data blocks are full of numbers.
        if not strict and len(tokens) == 1 and tokens[0].isdigit():
            return response(protocol=_TEXT, reply=Reply.NUMBER, start_ns=start, end_ns=end)
        return None

    def _other(self, tokens: list[bytes], start: int, end: int) -> Response:
        return response(protocol=_TEXT, reply=Reply.OTHER, start_ns=start, end_ns=end)

    def receive_hole(self, length: int, timestamp_ns: int) -> list[ParserEvent]:
        # A client reading a big value gets its tail and the closing END in one read, and a capture that copies
        # only the start of each read loses both. Right after a text VALUE's data block comes END (5 bytes) or
        # another VALUE (15 bytes at least), so a hole that ends less than 15 bytes past the data block holds
        # that END first: the reply is kept whole, and only what follows the END is lost.
        pending = self._pending
        excess = length - self._remaining
        if (not self._remaining or not _END_SIZE <= excess < _SHORTEST_VALUE or pending is None
                or pending.protocol is not _TEXT or pending.reply is not Reply.VALUE):
            return super().receive_hole(length, timestamp_ns)
        events = super().receive_hole(self._remaining, timestamp_ns)
        self.stats.bytes_missing += _END_SIZE
        self.stats.bytes_missing_in_values += _END_SIZE
        events.append(response(protocol=_TEXT, reply=Reply.END, start_ns=timestamp_ns, end_ns=timestamp_ns))
        return events + super().receive_hole(excess - _END_SIZE, timestamp_ns)
