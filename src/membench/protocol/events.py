"""Events of the sans-IO memcached parsers: what a request or a reply said, never how it was read.

The parsers of every protocol (text, meta, binary) produce these same small immutable events, so pairing and
everything after it is protocol-agnostic. Keys are kept as the bytes memcached looks up: a meta key sent in base64
(the `b` flag, in a request or in a reply's `k`) is decoded, so one key gives one hash whatever the protocol. Keys
are only ever turned into hashes by the anonymizer; values are never kept, only their lengths.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class Protocol(StrEnum):
    TEXT = "text"
    META = "meta"
    BINARY = "binary"


class Command(StrEnum):
    """A logical command. Binary opcodes map onto the text name of the same operation (GetKQ -> GET, quiet)."""

    GET = "get"
    GETS = "gets"
    GAT = "gat"
    GATS = "gats"
    SET = "set"
    ADD = "add"
    REPLACE = "replace"
    APPEND = "append"
    PREPEND = "prepend"
    CAS = "cas"
    DELETE = "delete"
    INCR = "incr"
    DECR = "decr"
    TOUCH = "touch"
    FLUSH_ALL = "flush_all"
    VERSION = "version"
    STATS = "stats"
    VERBOSITY = "verbosity"
    QUIT = "quit"
    NOOP = "noop"  # binary Noop
    META_GET = "mg"
    META_SET = "ms"
    META_DELETE = "md"
    META_ARITHMETIC = "ma"
    META_NOOP = "mn"
    META_DEBUG = "me"
    OTHER = "other"  # a well-formed command membench does not model (e.g. slabs, lru_crawler, SASL)


STORAGE_COMMANDS = frozenset(
    {Command.SET, Command.ADD, Command.REPLACE, Command.APPEND, Command.PREPEND, Command.CAS, Command.META_SET}
)
RETRIEVAL_COMMANDS = frozenset(
    {Command.GET, Command.GETS, Command.GAT, Command.GATS, Command.META_GET}
)


class Request(NamedTuple):
    """One command as sent by a client. A multi-key get is one Request with several keys."""

    protocol: Protocol
    command: Command
    keys: tuple[bytes, ...]  # empty for keyless commands (stats, version, mn, ...)
    value_length: int | None  # length of the data block of storage commands
    flags: int | None  # client flags of storage commands (32-bit)
    ttl: int | None  # exptime of storage / touch / gat commands, meta T flag
    noreply: bool  # text `noreply`: no reply will ever come
    quiet: bool  # meta `q` or binary quiet opcode: the reply is suppressed on the uninteresting outcome
    opaque: int | bytes | None  # binary opaque (int) or meta `O` token (bytes); matched against replies
    meta_flags: bytes  # the letters of a meta command's flags (b"qCN"), which decide what a quiet one can answer
    start_ns: int  # timestamp of the chunk holding the first byte
    end_ns: int  # timestamp of the chunk holding the last byte
    # What replay needs to reproduce the command's effect on the server (profile schema version 2):
    effect: Command | None  # meta: the classic command with the same effect (ms MA -> append, ma MD -> decr, ...)
    delta: int | None  # incr/decr/ma: the amount
    initial: int | None  # a counter that creates a missing key (binary with an expiration, ma N): its first value
    binary_opcode: int | None = None  # a binary request's opcode, which memcached's reply to it repeats


class Reply(StrEnum):
    """What a reply line or packet says, without knowing which request it answers."""

    VALUE = "value"  # an item: text VALUE, meta VA, binary get success
    END = "end"  # text END: closes a get or stats reply
    MISS = "miss"  # meta EN, binary get KEY_NOT_FOUND
    HD = "hd"  # meta HD: success without a value (stored, deleted, hit without v, ...)
    STORED = "stored"
    NOT_STORED = "not_stored"
    EXISTS = "exists"
    NOT_FOUND = "not_found"
    DELETED = "deleted"
    TOUCHED = "touched"
    OK = "ok"
    NUMBER = "number"  # incr/decr result (text bare number, meta VA/HD of ma, binary incr success)
    VERSION = "version"
    STAT = "stat"  # one STAT line or binary stat packet with a key
    NOOP = "noop"  # meta MN, binary Noop reply
    DEBUG = "debug"  # meta ME reply
    ERROR = "error"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"
    OTHER = "other"  # a reply line membench does not model (ITEM, RESET, ...)


class Response(NamedTuple):
    """One reply unit: a line (with its data block, if any) in text/meta, a packet in binary."""

    protocol: Protocol
    reply: Reply
    key: bytes | None  # text VALUE key, meta `k` return, binary GetK key
    value_length: int | None  # length of the returned data block
    flags: int | None
    opaque: int | bytes | None
    binary_opcode: int | None  # binary replies say which command they answer
    binary_status: int | None
    start_ns: int
    end_ns: int
    cas: int | None  # the item's CAS unique, where the reply shows it (text gets, meta c, every binary reply)


def request(*, protocol: Protocol, command: Command, start_ns: int, end_ns: int, keys: tuple[bytes, ...] = (),
            value_length: int | None = None, flags: int | None = None, ttl: int | None = None, noreply: bool = False,
            quiet: bool = False, opaque: int | bytes | None = None, meta_flags: bytes = b"",
            effect: Command | None = None, delta: int | None = None, initial: int | None = None,
            binary_opcode: int | None = None) -> Request:
    """A Request, naming only what the command says: every other field keeps its "not said" value."""
    return Request(protocol=protocol, command=command, keys=keys, value_length=value_length, flags=flags, ttl=ttl,
                   noreply=noreply, quiet=quiet, opaque=opaque, meta_flags=meta_flags, start_ns=start_ns,
                   end_ns=end_ns, effect=effect, delta=delta, initial=initial, binary_opcode=binary_opcode)


def response(*, protocol: Protocol, reply: Reply, start_ns: int, end_ns: int, key: bytes | None = None,
             value_length: int | None = None, flags: int | None = None, opaque: int | bytes | None = None,
             binary_opcode: int | None = None, binary_status: int | None = None, cas: int | None = None) -> Response:
    """A Response, naming only what the reply says."""
    return Response(protocol=protocol, reply=reply, key=key, value_length=value_length, flags=flags, opaque=opaque,
                    binary_opcode=binary_opcode, binary_status=binary_status, start_ns=start_ns, end_ns=end_ns,
                    cas=cas)


class Skipped(NamedTuple):
    """Bytes the parser could not attribute to a command or reply: it lost sync and skipped them."""

    length: int
    reason: str  # "hole", "resync", "bad_line", ...
    timestamp_ns: int


ParserEvent = Request | Response | Skipped
