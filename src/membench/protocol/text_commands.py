"""What each line of the text protocol means: a command line to its Request, a reply line to its Response.

A handler takes the tokens of a line (its first word first) and returns the unit, or None if memcached would
reject the line. The numbers are read as memcached reads them, so a line memcached refuses is refused here too and
the data block that follows it is framed exactly as memcached frames it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from membench.protocol.events import Command, Protocol, Reply, Request, Response, request, response

KEY_MAX = 250  # memcached's KEY_MAX_LENGTH: longer keys get CLIENT_ERROR
UINT32_MAX = (1 << 32) - 1
UINT64_MAX = (1 << 64) - 1
_INT32_MAX = (1 << 31) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

_TEXT = Protocol.TEXT
_CAS = Command.CAS  # an enum member looked up on its class costs a Python-level attribute access every time
_NOREPLY = b"noreply"

_INTEGER = re.compile(rb"[+-]?[0-9]+")

RequestHandler = Callable[[list[bytes], Command, int, int], Request | None]
ResponseHandler = Callable[[list[bytes], Reply, int, int], Response | None]


def integer(token: bytes) -> int:
    """A decimal number as memcached's strtol-based parsing takes it: a sign and digits, nothing else (Python's int()
    would also take underscores and surrounding whitespace). Raises ValueError otherwise."""
    if _INTEGER.fullmatch(token) is None:
        raise ValueError(f"not a decimal number: {token!r}")
    return int(token)


def _keys_ok(keys: tuple[bytes, ...]) -> bool:
    return max(map(len, keys)) <= KEY_MAX


def data_length(token: bytes) -> int | None:
    """The data block length memcached reads from a storage line, or None if it rejects the line.

    memcached parses the number with strtol into an int32: past int64 the line is refused, otherwise only the low
    32 bits count (`set k 0 0 4294967299` stores 3 bytes), and a negative result or one above INT_MAX - 2 is
    refused. A refused line has no data block: memcached reads what follows as the next command.
    """
    try:
        number = integer(token)
    except ValueError:
        return None
    if not _INT64_MIN <= number <= _INT64_MAX:
        return None
    length = ((number + (1 << 31)) & UINT32_MAX) - (1 << 31)
    return length if 0 <= length <= _INT32_MAX - 2 else None


def client_flags(token: bytes) -> int | None:
    """The client flags memcached keeps for a flags token, or None if it refuses the line (CLIENT_ERROR).

    memcached reads flags with strtoul into 64 bits and keeps the low 32 (`set k 99999999999 0 1` is returned with
    flags 1215752191). strtoul fails past 2^64-1 and negates a signed number modulo 2^64; memcached then refuses a
    `-` only when the result reads as a negative int64, so `-1` is refused while `-0` and `-9223372036854775809`
    (which wraps to 2^63-1) are kept. Checked against memcached 1.6.18, whose meta `F` flag reads the same way.
    """
    try:
        number = integer(token)
    except ValueError:
        return None
    if not -UINT64_MAX <= number <= UINT64_MAX:
        return None
    wrapped = number & UINT64_MAX
    if number < 0 and wrapped > _INT64_MAX:
        return None
    return wrapped & UINT32_MAX


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
    return request(protocol=_TEXT, command=command, keys=keys, start_ns=start, end_ns=end)


def _get_and_touch(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    if len(t) < 3:
        return None
    try:
        ttl = integer(t[1])
    except ValueError:
        return None
    keys = tuple(t[2:])
    if not _keys_ok(keys):
        return None
    return request(protocol=_TEXT, command=command, keys=keys, ttl=ttl, start_ns=start, end_ns=end)


def _storage(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    # <cmd> <key> <flags> <exptime> <bytes> [<cas unique>] [noreply]; memcached ignores a last token that is
    # not "noreply", so "set k 0 0 3 junk" stores.
    n = len(t)
    fixed = 6 if command is _CAS else 5
    if n != fixed and n != fixed + 1:
        return None
    key = t[1]
    try:
        ttl = integer(t[3])
        if fixed == 6:
            integer(t[5])
    except ValueError:
        return None
    flags = client_flags(t[2])
    length = data_length(t[4])
    if length is None or flags is None or not _INT64_MIN <= ttl <= _INT64_MAX or len(key) > KEY_MAX:
        return None
    noreply = n > fixed and t[-1] == _NOREPLY
    return request(protocol=_TEXT, command=command, keys=(key,), value_length=length, flags=flags, ttl=ttl,
                   noreply=noreply, start_ns=start, end_ns=end)


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
    return request(protocol=_TEXT, command=command, keys=(t[1],), noreply=noreply, start_ns=start, end_ns=end)


def _arithmetic(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    n = len(t)
    if (n != 3 and n != 4) or not t[2].isdigit() or len(t[1]) > KEY_MAX:
        return None
    noreply = n == 4 and t[3] == _NOREPLY
    delta = integer(t[2])
    return request(protocol=_TEXT, command=command, keys=(t[1],), noreply=noreply, start_ns=start, end_ns=end,
                   delta=delta if delta <= UINT64_MAX else None)


def _touch(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    n = len(t)
    if (n != 3 and n != 4) or len(t[1]) > KEY_MAX:
        return None
    try:
        ttl = integer(t[2])
    except ValueError:
        return None
    noreply = n == 4 and t[3] == _NOREPLY
    return request(protocol=_TEXT, command=command, keys=(t[1],), ttl=ttl, noreply=noreply, start_ns=start, end_ns=end)


def _keyless(t: list[bytes], command: Command, start: int, end: int, low: int, high: int) -> Request | None:
    n = len(t)
    if n < low or n > high:
        return None
    noreply = n > 1 and t[-1] == _NOREPLY
    return request(protocol=_TEXT, command=command, noreply=noreply, start_ns=start, end_ns=end)


def _flush_all(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    return _keyless(t, command, start, end, 1, 3)


def _verbosity(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    return _keyless(t, command, start, end, 2, 3)


def _no_arguments(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    return _keyless(t, command, start, end, 1, 1)


def _stats(t: list[bytes], command: Command, start: int, end: int) -> Request | None:
    # stats arguments name a stats group, never a cache key
    return request(protocol=_TEXT, command=command, start_ns=start, end_ns=end)


TEXT_REQUEST_HANDLERS: dict[bytes, tuple[RequestHandler, Command]] = {
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
}


# Response handlers: tokens of the reply line -> the Response, or None if the line is not that reply.

def _value(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    # VALUE <key> <flags> <bytes> [<cas unique>]
    n = len(t)
    if n != 4 and n != 5:
        return None
    try:
        flags = integer(t[2])
        length = integer(t[3])
    except ValueError:
        return None
    if length < 0 or flags < 0:
        return None
    cas = int(t[4]) if n == 5 and t[4].isdigit() else None
    return response(protocol=_TEXT, reply=reply, key=t[1], value_length=length, flags=flags, start_ns=start,
                    end_ns=end, cas=cas)


def _bare(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    if len(t) != 1:
        return None
    return response(protocol=_TEXT, reply=reply, start_ns=start, end_ns=end)


def _with_text(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    # ERROR [message], CLIENT_ERROR <message>, SERVER_ERROR <message>
    return response(protocol=_TEXT, reply=reply, start_ns=start, end_ns=end)


def _with_argument(t: list[bytes], reply: Reply, start: int, end: int) -> Response | None:
    # VERSION <version>, STAT <name> <value>
    if len(t) < 2:
        return None
    return response(protocol=_TEXT, reply=reply, start_ns=start, end_ns=end)


TEXT_RESPONSE_HANDLERS: dict[bytes, tuple[ResponseHandler, Reply]] = {
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
}

