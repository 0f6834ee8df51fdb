"""What each meta command line (mg, ms, md, ma, mn, me) and meta reply line (VA, HD, EN, ...) means.

Meta commands share the text protocol's framing (lines and data blocks); only their tokens differ: a key, then
flags, each a letter and maybe a value. A key sent with the `b` flag is base64 and is decoded to the key memcached
looks up, in requests and in the `k` a reply returns.
"""

from __future__ import annotations

import binascii
from typing import NamedTuple

from membench.protocol.events import Command, Protocol, Reply, Request, Response, request, response
from membench.protocol.text_commands import (
    KEY_MAX,
    UINT64_MAX,
    RequestHandler,
    ResponseHandler,
    client_flags,
    data_length,
    integer,
)

BASE64_KEY_MAX = 4 * ((KEY_MAX + 2) // 3)
_META = Protocol.META


class _MetaFlags(NamedTuple):
    """What membench reads from a meta command's flag tokens."""

    quiet: bool
    opaque: bytes | None
    ttl: int | None
    flags: int | None  # client flags (F): the low 32 bits memcached keeps, read as the text commands' flags
    base64: bool
    letters: bytes  # every flag's letter, in order
    valid: bool  # False if a numeric token is not a number memcached takes: it then answers CLIENT_ERROR
    mode: int | None  # the M flag's mode character, upper-cased (memcached takes either case)
    delta: int | None  # D
    first_value: int | None  # J


def _meta_flags(t: list[bytes], first: int) -> _MetaFlags:
    quiet = base64 = False
    valid = True
    opaque: bytes | None = None
    ttl = flags = mode = delta = first_value = None
    tokens = t[first:]
    for token in tokens:
        flag = token[0]
        if flag == 113:  # q
            quiet = True
        elif flag == 79:  # O
            opaque = token[1:]
        elif flag == 98:  # b
            base64 = True
        elif flag == 84:  # T
            try:
                ttl = integer(token[1:])
            except ValueError:
                valid = False
        elif flag == 70:  # F
            kept = client_flags(token[1:])
            if kept is None:
                valid = False
            else:
                flags = kept
        elif flag == 77 and len(token) > 1:  # M
            mode = token[1] - 32 if 97 <= token[1] <= 122 else token[1]
        elif flag == 68 and token[1:].isdigit():  # D
            delta = integer(token[1:])
        elif flag == 74 and token[1:].isdigit():  # J
            first_value = integer(token[1:])
    return _MetaFlags(quiet, opaque, ttl, flags, base64, bytes(token[0] for token in tokens), valid, mode, delta,
                      first_value)


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


_META_SET_MODES = {ord("S"): Command.SET, ord("E"): Command.ADD, ord("A"): Command.APPEND,
                   ord("P"): Command.PREPEND, ord("R"): Command.REPLACE}
_META_ARITHMETIC_MODES = {ord("I"): Command.INCR, ord("+"): Command.INCR, ord("D"): Command.DECR,
                          ord("-"): Command.DECR}
_META_EFFECTS = {Command.META_GET: Command.GET, Command.META_SET: Command.SET, Command.META_DELETE: Command.DELETE,
                 Command.META_ARITHMETIC: Command.INCR}


def _meta_effect(command: Command, parsed: _MetaFlags) -> tuple[Command | None, int | None, int | None]:
    """(effect, delta, initial) of a meta command: the flags that change what it does to the server.

    mg with T touches (memcached counts a hit as a touch); ms's M mode and C compare-and-swap; ma's M mode, its D
    delta, and N, which creates a missing key with the J value (0 by default). Unknown or malformed mode flags
    leave memcached's default, which memcached itself would refuse: the reply tells.
    """
    effect = _META_EFFECTS.get(command)
    if effect is None:
        return None, None, None
    if command is Command.META_GET:
        return (Command.GAT if parsed.ttl is not None else effect), None, None
    letters = parsed.letters
    if parsed.mode is not None:
        modes = _META_SET_MODES if command is Command.META_SET else _META_ARITHMETIC_MODES
        effect = modes.get(parsed.mode, effect)
    if effect is Command.SET and 67 in letters:  # C
        effect = Command.CAS
    if command is not Command.META_ARITHMETIC:
        return effect, None, None
    delta = 1 if parsed.delta is None else parsed.delta
    initial = (parsed.first_value or 0) if 78 in letters else None  # N
    return (effect, delta if delta <= UINT64_MAX else None,
            initial if initial is None or initial <= UINT64_MAX else None)


def _meta_keyed(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    # mg / md / ma / me <key> <flags>*
    if len(t) < 2:
        return None
    parsed = _meta_flags(t, 2)
    key = _meta_key(t[1], parsed.base64)
    if key is None or not parsed.valid:
        return None
    effect, delta, initial = _meta_effect(command, parsed)
    return request(protocol=_META, command=command, keys=(key,), ttl=parsed.ttl, quiet=parsed.quiet,
                   opaque=parsed.opaque, meta_flags=parsed.letters, start_ns=start, end_ns=end, effect=effect,
                   delta=delta, initial=initial)


def _meta_set(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    # ms <key> <datalen> <flags>*; memcached 1.6 rejects the older `S<datalen>` flag form, and so do we.
    if len(t) < 3:
        return None
    length = data_length(t[2])
    if length is None:
        return None
    parsed = _meta_flags(t, 3)
    # A bad key or flag token gets CLIENT_ERROR but memcached still reads (and drops) the data block, so the
    # command stays a set with its data; a refused key is kept as sent, since memcached never looked it up.
    key = _meta_key(t[1], parsed.base64) or t[1]
    # Unset F and T store 0, as memcached does.
    effect = _meta_effect(command, parsed)[0]
    return request(protocol=_META, command=command, keys=(key,), value_length=length, flags=parsed.flags or 0,
                   ttl=parsed.ttl or 0, quiet=parsed.quiet, opaque=parsed.opaque, meta_flags=parsed.letters,
                   start_ns=start, end_ns=end, effect=effect)


def _meta_noop(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    return request(protocol=_META, command=command, start_ns=start, end_ns=end)


META_REQUEST_HANDLERS: dict[bytes, tuple[RequestHandler, Command]] = {
    b"mg": (_meta_keyed, Command.META_GET),
    b"ms": (_meta_set, Command.META_SET),
    b"md": (_meta_keyed, Command.META_DELETE),
    b"ma": (_meta_keyed, Command.META_ARITHMETIC),
    b"mn": (_meta_noop, Command.META_NOOP),
    b"me": (_meta_keyed, Command.META_DEBUG),
}


def _meta_return_flags(t: list[bytes], first: int
                       ) -> tuple[bytes | None, bytes | None, int | None, int | None] | None:
    """(opaque, key, client flags, cas) returned in meta reply flags, or None if a numeric token is bad."""
    opaque: bytes | None = None
    key: bytes | None = None
    flags: int | None = None
    cas: int | None = None
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
                flags = integer(token[1:])
            except ValueError:
                return None
        elif flag == 99 and token[1:].isdigit():  # c
            cas = integer(token[1:])
    if base64 and key is not None:
        key = _meta_key(key, True)
    return opaque, key, flags, cas


def _meta_value(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    # VA <size> <flags>*
    if len(t) < 2:
        return None
    try:
        length = integer(t[1])
    except ValueError:
        return None
    returned = _meta_return_flags(t, 2)
    if returned is None or length < 0:
        return None
    opaque, key, flags, cas = returned
    return response(protocol=_META, reply=reply, key=key, value_length=length, flags=flags, opaque=opaque,
                    start_ns=start, end_ns=end, cas=cas)


def _meta_status(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    # HD / EN / NF / NS / EX <flags>*
    returned = _meta_return_flags(t, 1)
    if returned is None:
        return None
    opaque, key, flags, cas = returned
    return response(protocol=_META, reply=reply, key=key, flags=flags, opaque=opaque, start_ns=start, end_ns=end,
                    cas=cas)


def _meta_noop_reply(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    if len(t) != 1:
        return None
    return response(protocol=_META, reply=reply, start_ns=start, end_ns=end)


def _meta_debug_reply(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    # ME <key> <k>=<v>*
    if len(t) < 2:
        return None
    return response(protocol=_META, reply=reply, key=t[1], start_ns=start, end_ns=end)


META_RESPONSE_HANDLERS: dict[bytes, tuple[ResponseHandler, Reply]] = {
    b"VA": (_meta_value, Reply.VALUE),
    b"HD": (_meta_status, Reply.HD),
    b"EN": (_meta_status, Reply.MISS),
    b"NF": (_meta_status, Reply.NOT_FOUND),
    b"NS": (_meta_status, Reply.NOT_STORED),
    b"EX": (_meta_status, Reply.EXISTS),
    b"MN": (_meta_noop_reply, Reply.NOOP),
    b"ME": (_meta_debug_reply, Reply.DEBUG),
}
