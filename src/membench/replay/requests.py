"""Request encoding for replay: a planned request's shape and keys in, the bytes to send and how its replies end.

Requests repeat a few shapes (command, sizes, flags, expiry), so a one-key shape is encoded once into the bytes
around its key and later requests of that shape are concatenated, not encoded. Quiet requests and binary ones
carry opaques numbered by the caller, which is what their replies are matched on.
"""

from __future__ import annotations

from typing import NamedTuple

from membench.protocol.encode import META_NOOP, binary_noop, encode_binary, encode_meta, encode_text
from membench.protocol.events import STORAGE_COMMANDS, Command, Protocol
from membench.replay.keys import ValueSource
from membench.replay.order import Dependency
from membench.replay.survey import RETRIEVALS

# How a request group's replies end.
EXPECT_NONE = 0  # text noreply: nothing comes back
EXPECT_UNITS = 1  # exactly `units` replies
EXPECT_END = 2  # VALUE/STAT replies up to END (text get family, stats)
EXPECT_NOOP = 3  # quiet requests closed by our own noop: replies up to the noop's
EXPECT_QUIET = 4  # one quiet request: done at its own unsuppressed reply or at any later request's reply

INTERNAL_SLOT = -1  # requests membench adds (the noop that drains quiet requests): never counted

# A cas carries the unique the replay's server gave its key (known only once the gets before it is answered): the
# planner leaves this placeholder (binary: the header's cas field), the link fills it in as it sends.
CAS_NONE = 0
CAS_CURRENT = 1  # the recording's cas stored: send the unique the server last gave
CAS_STALE = 2  # the recording's cas found the item changed: send one that cannot match
CAS_PLACEHOLDER = b"\x00unique\x00"

# The commands whose request carries a value. The others' shapes hold value_length 0: a get encodes alike whatever
# the size of the item it read, so gets of every size share one template.
VALUE_COMMANDS = STORAGE_COMMANDS - {Command.META_SET}
_BINARY, _META = Protocol.BINARY, Protocol.META
_GET, _STATS = Command.GET, Command.STATS
_ALWAYS_ANSWERED = frozenset({Command.VERSION, Command.STATS, Command.NOOP})  # text has no noreply form of these

Template = tuple[bytes, bytes, int, int]  # head, tail (around the key), expect, units
_UNSEEN: Template | None = (b"", b"", -1, -1)  # a shape not encoded yet (compared by identity)
_TEMPLATES = 4096  # request shapes remembered (value sizes vary in real profiles): starts over when full
# A template holds its value: larger ones are encoded each time, which copies no more than concatenating does, so
# that the templates hold 64 MiB at most.
_TEMPLATE_VALUE_BYTES = 16 * 1024


class Group(NamedTuple):
    """One request as a stream sends it (a multi-key get is one group)."""

    payload: bytes
    slot: int  # index of the command in Planner.commands, or INTERNAL_SLOT
    rows: int  # profile rows (key operations) it carries
    expect: int
    units: int  # replies that end it, for EXPECT_UNITS
    at_ns: int  # intended send time from the start of the loop (open-loop timings)
    outstanding: int  # requests the recording had in flight on its connection when it sent this one
    seq: int  # opaque of its first request (binary always, meta when quiet)
    number: int  # its place among the groups this worker plans in one pass (INTERNAL_SLOT for added ones)
    after: tuple[Dependency, ...]  # (stream, number) of requests on other streams that must be answered first
    cas: int  # CAS_NONE, or which unique the link puts in the payload's placeholder
    key: bytes  # the key of a cas (whose unique the link looks up); empty otherwise


# The compiled planner hands a stream's groups over as one GroupBlock (record/_core_groups.pxi), not a tuple each: a
# row of int64 fields per group in this order, the payloads laid end to end (a group's ends where the next one's
# begins) and the dependencies as (stream, number) pairs. Both compiled modules check their positions against it.
BLOCK_FIELDS = ("slot", "rows", "expect", "units", "at_ns", "outstanding", "seq", "number", "cas", "payload_end",
                "after_end")


class RequestShape(NamedTuple):
    command: Command
    value_length: int
    flags: int
    ttl: int
    quiet: bool
    delta: int
    initial: int | None  # a counter that creates a missing key with this value


class RequestEncoder:
    """Encodes the requests of one planner, remembering the bytes of the shapes it has seen."""

    def __init__(self, uniques_needed: bool) -> None:
        self._values = ValueSource()
        self._uniques_needed = uniques_needed  # the profile has a cas: gets must show the unique it needs
        self._templates: dict[tuple[Protocol, RequestShape, int], Template | None] = {}

    def template(self, protocol: Protocol, request: RequestShape, key_length: int) -> Template | None:
        """What a one-key request of this shape encodes to around its key (head, tail, expect, units); None when
        it carries an opaque or a large value. Requests repeat a few shapes, and concatenating is cheaper than
        encoding."""
        if request.value_length > _TEMPLATE_VALUE_BYTES:
            return None
        template = self._templates.get((protocol, request, key_length), _UNSEEN)
        if template is not _UNSEEN:
            return template
        placeholder = b"\x00" * key_length  # a byte no text or meta request holds elsewhere
        payload, expect, units, used = self.encode(protocol, request, [placeholder], 1)
        template = None
        if not used:
            head, _, tail = payload.partition(placeholder)
            template = (head, tail, expect, units)
        if len(self._templates) >= _TEMPLATES:
            self._templates.clear()
        self._templates[protocol, request, key_length] = template
        return template

    def encode(self, protocol: Protocol, request: RequestShape, keys: list[bytes], seq: int
                ) -> tuple[bytes, int, int, int]:
        """(payload, expect, units, opaques used); quiet requests and binary ones are numbered from `seq`."""
        send_as = command = request.command
        if command is _GET and self._uniques_needed:
            send_as = Command.GETS  # counted as the same get, and its reply shows the unique a later cas needs
        value = self._values.value(request.value_length) if command in VALUE_COMMANDS else b""
        if protocol is _BINARY:
            return _binary(send_as, keys, value, request, seq)
        if protocol is _META and keys:
            return _meta(send_as, keys, value, request, seq)
        if send_as in RETRIEVALS:
            return encode_text(send_as, keys, ttl=request.ttl), EXPECT_END, 0, 0
        noreply = request.quiet and send_as not in _ALWAYS_ANSWERED
        payload = encode_text(send_as, keys, value=value, flags=request.flags, ttl=request.ttl, noreply=noreply,
                              delta=request.delta, cas_unique=CAS_PLACEHOLDER)
        if noreply:
            return payload, EXPECT_NONE, 0, 0
        return payload, EXPECT_END if send_as is _STATS else EXPECT_UNITS, 1, 0


def _meta(command: Command, keys: list[bytes], value: bytes, request: RequestShape, seq: int
          ) -> tuple[bytes, int, int, int]:
    flags, ttl, delta, initial = request.flags, request.ttl, request.delta, request.initial
    if not request.quiet:
        payload = b"".join(encode_meta(command, key, value=value, flags=flags, ttl=ttl, delta=delta, initial=initial,
                                       cas_unique=CAS_PLACEHOLDER) for key in keys)
        return payload, EXPECT_UNITS, len(keys), 0
    parts = [encode_meta(command, key, value=value, flags=flags, ttl=ttl, quiet=True, opaque=seq + number,
                         delta=delta, initial=initial, cas_unique=CAS_PLACEHOLDER)
             for number, key in enumerate(keys)]
    if len(keys) == 1:
        return parts[0], EXPECT_QUIET, 0, 1
    parts.append(META_NOOP)
    return b"".join(parts), EXPECT_NOOP, 0, len(keys)


def _binary(command: Command, keys: list[bytes], value: bytes, request: RequestShape, seq: int
            ) -> tuple[bytes, int, int, int]:
    if command is Command.NOOP:
        return binary_noop(seq), EXPECT_UNITS, 1, 1
    if len(keys) > 1:
        parts = [encode_binary(command, key, ttl=request.ttl, quiet=True, with_key=True, opaque=seq + number)
                 for number, key in enumerate(keys)]
        parts.append(binary_noop(seq + len(keys)))
        return b"".join(parts), EXPECT_NOOP, 0, len(keys) + 1
    can_be_quiet = request.quiet and command not in (Command.TOUCH, Command.VERSION, Command.STATS,
                                                     Command.VERBOSITY)
    # A gets asks for its key back (GetK): the unique in the reply is then known to belong to it, for a later cas.
    payload = encode_binary(command, keys[0] if keys else b"", value=value, flags=request.flags, ttl=request.ttl,
                            quiet=can_be_quiet, opaque=seq, delta=request.delta, initial=request.initial,
                            with_key=command is Command.GETS)
    if can_be_quiet:
        return payload, EXPECT_QUIET, 0, 1
    return payload, EXPECT_END if command is Command.STATS else EXPECT_UNITS, 1, 1
