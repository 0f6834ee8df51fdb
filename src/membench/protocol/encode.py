"""Request encoders for replay: a command and its arguments in, the bytes a client would send out (sans-IO).

Each protocol has one function taking a logical `Command` (the text name of the operation). Meta and text share
memcached's ASCII port, so the meta encoder writes the commands meta has no form for (stats, version, flush_all,
verbosity) in text. Binary requests carry the caller's opaque, which is what the replies are matched on.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from membench.protocol.events import Command

_CRLF = b"\r\n"

# Binary opcodes: (normal, quiet); None where the protocol has no quiet form.
_BINARY_OPCODES: dict[Command, tuple[int, int | None]] = {
    Command.GET: (0x00, 0x09),
    Command.GETS: (0x00, 0x09),
    Command.SET: (0x01, 0x11),
    Command.CAS: (0x01, 0x11),
    Command.ADD: (0x02, 0x12),
    Command.REPLACE: (0x03, 0x13),
    Command.DELETE: (0x04, 0x14),
    Command.INCR: (0x05, 0x15),
    Command.DECR: (0x06, 0x16),
    Command.QUIT: (0x07, 0x17),
    Command.FLUSH_ALL: (0x08, 0x18),
    Command.NOOP: (0x0A, None),
    Command.VERSION: (0x0B, None),
    Command.APPEND: (0x0E, 0x19),
    Command.PREPEND: (0x0F, 0x1A),
    Command.STATS: (0x10, None),
    Command.VERBOSITY: (0x1B, None),
    Command.TOUCH: (0x1C, None),
    Command.GAT: (0x1D, 0x1E),
    Command.GATS: (0x1D, 0x1E),
}
BINARY_GETK = 0x0C
BINARY_GETKQ = 0x0D
_BINARY_HEADER = struct.Struct(">BBHBBHIIQ")
_STORAGE_EXTRAS = struct.Struct(">II")
_ARITHMETIC_EXTRAS = struct.Struct(">QQI")
_EXPIRY_EXTRAS = struct.Struct(">I")
# Arithmetic on a missing key must fail (NOT_FOUND), as text incr/decr does, not create the key.
_NO_AUTOVIVIFY = 0xFFFFFFFF

_TEXT_STORAGE = frozenset({Command.SET, Command.ADD, Command.REPLACE, Command.APPEND, Command.PREPEND})
_TEXT_RETRIEVAL = frozenset({Command.GET, Command.GETS})
_TEXT_TOUCH_RETRIEVAL = frozenset({Command.GAT, Command.GATS})
_META_SET_MODES = {
    Command.SET: b"S",
    Command.CAS: b"S",
    Command.ADD: b"E",
    Command.REPLACE: b"R",
    Command.APPEND: b"A",
    Command.PREPEND: b"P",
}
_META_GET_FLAGS = {
    Command.GET: b" v",
    Command.GETS: b" v c k",  # the key returned beside the unique: a replay's later cas needs both
    Command.GAT: b" v T%d",
    Command.GATS: b" v c k T%d",
    Command.TOUCH: b" T%d",
}

META_NOOP = b"mn\r\n"
_NAMES = {command: command.value.encode() for command in Command}


def encode_text(
    command: Command,
    keys: Sequence[bytes] = (),
    *,
    value: bytes = b"",
    flags: int = 0,
    ttl: int = 0,
    noreply: bool = False,
    cas_unique: int | bytes = 0,
    delta: int = 1,
) -> bytes:
    """One text-protocol request. `keys` holds every key of a multi-key get, exactly one key otherwise.
    `cas_unique` may be bytes: a placeholder the caller replaces once the unique is known."""
    tail = b" noreply\r\n" if noreply else _CRLF
    if command in _TEXT_RETRIEVAL:
        return _NAMES[command] + b" " + (keys[0] if len(keys) == 1 else b" ".join(keys)) + _CRLF
    if command in _TEXT_TOUCH_RETRIEVAL:
        return b"%s %d %s\r\n" % (_NAMES[command], ttl, b" ".join(keys))
    if command in _TEXT_STORAGE:
        return b"%s %s %d %d %d%s%s\r\n" % (_NAMES[command], keys[0], flags, ttl, len(value), tail, value)
    if command is Command.CAS:
        return b"cas %s %d %d %d %s%s%s\r\n" % (keys[0], flags, ttl, len(value), _number(cas_unique), tail, value)
    if command is Command.DELETE:
        return b"delete " + keys[0] + tail
    if command in (Command.INCR, Command.DECR):
        return b"%s %s %d%s" % (_NAMES[command], keys[0], delta, tail)
    if command is Command.TOUCH:
        return b"touch %s %d%s" % (keys[0], ttl, tail)
    if command is Command.FLUSH_ALL:
        return b"flush_all" + tail
    if command is Command.VERBOSITY:
        return b"verbosity 1" + tail
    if command in (Command.VERSION, Command.STATS, Command.QUIT):
        return _NAMES[command] + _CRLF
    if command is Command.NOOP:
        return META_NOOP
    raise ValueError(f"no text form for command {command}")


def encode_meta(
    command: Command,
    key: bytes = b"",
    *,
    value: bytes = b"",
    flags: int = 0,
    ttl: int = 0,
    quiet: bool = False,
    opaque: int | None = None,
    delta: int = 1,
    initial: int | None = None,
    cas_unique: int | bytes = 0,
) -> bytes:
    """One meta-protocol request for a logical command; `opaque` becomes the `O` flag echoed in the reply.
    A counter with an `initial` value creates a missing key with it (N, J), keeping `ttl`."""
    extra = b""
    if quiet:
        extra += b" q"
    if opaque is not None:
        extra += b" O%d" % opaque
    get_flags = _META_GET_FLAGS.get(command)
    if get_flags is not None:
        if b"%d" in get_flags:
            get_flags = get_flags % ttl
        return b"mg " + key + get_flags + extra + _CRLF
    mode = _META_SET_MODES.get(command)
    if command is Command.CAS:
        extra = b" C%s%s" % (_number(cas_unique), extra)
    if mode is not None:
        return b"ms %s %d F%d T%d M%s%s\r\n%s\r\n" % (key, len(value), flags, ttl, mode, extra, value)
    if command is Command.DELETE:
        return b"md " + key + extra + _CRLF
    if command in (Command.INCR, Command.DECR):
        mode = b"I" if command is Command.INCR else b"D"
        if initial is not None:
            extra = b" N%d J%d%s" % (ttl, initial, extra)
        return b"ma %s M%s D%d%s\r\n" % (key, mode, delta, extra)
    if command is Command.NOOP:
        return META_NOOP
    return encode_text(command, (key,) if key else ())


def encode_binary(
    command: Command,
    key: bytes = b"",
    *,
    value: bytes = b"",
    flags: int = 0,
    ttl: int = 0,
    quiet: bool = False,
    opaque: int = 0,
    delta: int = 1,
    initial: int | None = None,
    with_key: bool = False,
    cas_unique: int = 0,
) -> bytes:
    """One binary-protocol request. `with_key` asks for GetK/GetKQ (the reply carries the key), as multi-gets do.
    A counter with an `initial` value creates a missing key with it, expiring after `ttl`."""
    opcodes = _BINARY_OPCODES.get(command)
    if opcodes is None:
        raise ValueError(f"no binary form for command {command}")
    opcode = opcodes[1] if quiet and opcodes[1] is not None else opcodes[0]
    if with_key and command in _TEXT_RETRIEVAL:
        opcode = BINARY_GETKQ if quiet else BINARY_GETK
    if command in _META_SET_MODES and command not in (Command.APPEND, Command.PREPEND):
        extras = _STORAGE_EXTRAS.pack(flags, ttl & 0xFFFFFFFF)
    elif command in (Command.INCR, Command.DECR):
        if initial is None:
            extras = _ARITHMETIC_EXTRAS.pack(delta, 0, _NO_AUTOVIVIFY)
        else:
            extras = _ARITHMETIC_EXTRAS.pack(delta, initial, ttl & 0xFFFFFFFF)
    elif command in (Command.TOUCH, Command.GAT, Command.GATS):
        extras = _EXPIRY_EXTRAS.pack(ttl & 0xFFFFFFFF)
    elif command is Command.VERBOSITY:
        extras = _EXPIRY_EXTRAS.pack(1)
    else:
        extras = b""
    if command not in _META_SET_MODES:
        value = b""
    body_length = len(extras) + len(key) + len(value)
    header = _BINARY_HEADER.pack(0x80, opcode, len(key), len(extras), 0, 0, body_length, opaque, cas_unique)
    return header + extras + key + value


def _number(value: int | bytes) -> bytes:
    return value if isinstance(value, bytes) else b"%d" % value


def binary_noop(opaque: int = 0) -> bytes:
    """A binary Noop: its reply marks that every quiet request before it has been handled."""
    return _BINARY_HEADER.pack(0x80, 0x0A, 0, 0, 0, 0, 0, opaque, 0)
