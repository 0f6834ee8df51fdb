"""Pairs the requests of one connection with their replies and turns them into profile operations.

memcached answers the commands of a connection in the order it received them, so replies are matched first in,
first out. Three things bend that rule, and this module is where they are handled:
- text `noreply` commands get no reply at all;
- quiet commands (meta `q`, binary GetQ/SetQ/...) get a reply only for their interesting outcome (a hit, a
  failure), so a later reply, or the `mn`/Noop that closes a pipeline, tells that a quiet command had its
  boring outcome;
- binary and meta replies may carry an opaque token (and binary GetK / meta `k` the key), which identifies the
  request they answer even across quiet gaps.
After a hole in the reply stream some replies are gone for good; a reply that cannot belong to the oldest pending
request then marks that request as unanswered instead of shifting every later match by one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from membench.profile.outcomes import REPLY_STATUS, success_status, suppressed_status
from membench.profile.schema import Operation, Status
from membench.protocol.events import STORAGE_COMMANDS, Command, Protocol, Reply, Request, Response
from membench.record.limits import fit, fits

KeyHash = Callable[[bytes], int]
Emit = Callable[[Operation], None]

# An enum member looked up on its class costs a Python-level attribute access each time; the per-request and
# per-reply paths use these module constants instead.
_TEXT, _META, _BINARY = Protocol.TEXT, Protocol.META, Protocol.BINARY
_QUIT, _OTHER_COMMAND, _META_ARITHMETIC = Command.QUIT, Command.OTHER, Command.META_ARITHMETIC
_VALUE, _HD, _NOOP, _STAT, _OTHER_REPLY = Reply.VALUE, Reply.HD, Reply.NOOP, Reply.STAT, Reply.OTHER
_HIT, _MISS, _OK = Status.HIT, Status.MISS, Status.OK

_GET_FAMILY = frozenset({Command.GET, Command.GETS, Command.GAT, Command.GATS})
_STORAGE = STORAGE_COMMANDS - {Command.META_SET}
_ERRORS = frozenset({Reply.ERROR, Reply.CLIENT_ERROR, Reply.SERVER_ERROR})

# Which reply kinds can answer a command: used to notice replies lost in a hole, and quiet commands skipped.
_ANSWERS: dict[Command, frozenset[Reply]] = {
    **{c: frozenset({Reply.VALUE, Reply.END, Reply.MISS}) for c in _GET_FAMILY},
    **{c: frozenset({Reply.STORED, Reply.NOT_STORED, Reply.EXISTS, Reply.NOT_FOUND}) for c in _STORAGE},
    Command.DELETE: frozenset({Reply.DELETED, Reply.NOT_FOUND}),
    Command.INCR: frozenset({Reply.NUMBER, Reply.NOT_FOUND}),
    Command.DECR: frozenset({Reply.NUMBER, Reply.NOT_FOUND}),
    Command.TOUCH: frozenset({Reply.TOUCHED, Reply.NOT_FOUND}),
    Command.FLUSH_ALL: frozenset({Reply.OK}),
    Command.VERSION: frozenset({Reply.VERSION}),
    Command.STATS: frozenset({Reply.STAT, Reply.END, Reply.OTHER}),
    Command.VERBOSITY: frozenset({Reply.OK}),
    Command.NOOP: frozenset({Reply.NOOP}),
    Command.QUIT: frozenset({Reply.OK, Reply.OTHER}),
    Command.META_GET: frozenset({Reply.VALUE, Reply.HD, Reply.MISS}),
    Command.META_SET: frozenset({Reply.HD, Reply.NOT_STORED, Reply.EXISTS, Reply.NOT_FOUND}),
    Command.META_DELETE: frozenset({Reply.HD, Reply.NOT_FOUND, Reply.EXISTS}),
    Command.META_ARITHMETIC: frozenset({Reply.VALUE, Reply.HD, Reply.NOT_FOUND, Reply.NOT_STORED, Reply.EXISTS,
                                        Reply.NUMBER}),
    Command.META_NOOP: frozenset({Reply.NOOP}),
    Command.META_DEBUG: frozenset({Reply.DEBUG, Reply.MISS}),
}

_NO_ANSWERS: frozenset[Reply] = frozenset()

# What a quiet (`q`) meta command can still answer, as memcached 1.6 does it: q hides mg's EN and every other
# command's success (HD, and ma's VA), while the failures that need a flag to happen need that flag: EX and
# ms's NF need a compare-and-swap token (C), NS needs a mode other than set (M), and ma answers a miss it
# creates with N as if not quiet. Errors always come.
_QUIET_META_ANSWERS: dict[Command, frozenset[Reply]] = {
    Command.META_GET: frozenset({Reply.VALUE, Reply.HD}),
    Command.META_SET: frozenset(),
    Command.META_DELETE: frozenset({Reply.NOT_FOUND}),
    Command.META_ARITHMETIC: frozenset({Reply.NOT_FOUND}),
}
_HIT_REPLIES = frozenset({Reply.VALUE, Reply.HD})
_VALUE_FLAG = ord("v")
_QUIET_META_FLAG_ANSWERS: dict[Command, tuple[tuple[int, frozenset[Reply]], ...]] = {
    Command.META_SET: ((ord("C"), frozenset({Reply.NOT_FOUND, Reply.EXISTS})),
                       (ord("M"), frozenset({Reply.NOT_STORED}))),
    Command.META_DELETE: ((ord("C"), frozenset({Reply.EXISTS})),),
    Command.META_ARITHMETIC: ((ord("C"), frozenset({Reply.EXISTS})),
                              (ord("N"), frozenset({Reply.HD, Reply.VALUE, Reply.NOT_STORED}))),
}

# Commands whose reply is several units closed by a terminator (text END, binary stat with an empty key).
_MULTI_UNIT = _GET_FAMILY | {Command.STATS}

# Per-command lookups of the shared outcome rules, built once: they sit on the per-reply path.
_SUPPRESSED: dict[Command, Status] = {command: suppressed_status(command) for command in Command}
_HD_STATUS: dict[Command, Status] = {command: success_status(command) for command in Command}


@dataclass(slots=True)
class PairingStats:
    requests: int = 0
    operations: int = 0
    unmatched_responses: int = 0  # replies no pending request could have asked for
    unanswered_requests: int = 0  # requests whose reply was due but never seen
    unexpected_values: int = 0  # a text VALUE for a key the get did not ask for
    values_out_of_range: int = 0  # fields stored clamped or null because the wire's value did not fit the schema

    def add(self, other: PairingStats) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _Pending:
    """A request waiting for its reply; multi-key gets collect their VALUE units here."""

    __slots__ = ("batch", "hits", "reply_ns", "request")

    def __init__(self, request: Request, batch: int) -> None:
        self.request = request
        self.batch = batch
        self.hits: dict[int, Response] = {}  # key index -> VALUE unit
        self.reply_ns: int | None = None


class ConnectionPairer:
    """Pairs one connection's requests and replies; emits one Operation per key (or per keyless command)."""

    def __init__(self, connection: int, key_hash: KeyHash, emit: Emit, stats: PairingStats,
                 next_batch: Callable[[], int]) -> None:
        self._connection = connection
        self._key_hash = key_hash
        self._emit = emit
        self._stats = stats
        self._next_batch = next_batch
        self._pending: deque[_Pending] = deque()
        self._after_reply_hole = False

    def on_request(self, request: Request) -> None:
        self._stats.requests += 1
        pending = _Pending(request, self._next_batch())
        if request.noreply or (request.command is _QUIT and request.protocol is not _BINARY):
            self._finish(pending, Status.NOREPLY, None)
        else:
            self._pending.append(pending)

    def on_reply_hole(self) -> None:
        """Replies were lost: the next reply that cannot answer the oldest request means that request's was lost."""
        self._after_reply_hole = True

    def on_response(self, response: Response) -> None:
        queue = self._pending
        pending = None
        if queue:
            # Nearly every reply answers the oldest pending request: try that before the general search, which
            # settles on the same request whenever this check holds.
            head = queue[0]
            opaque = response.opaque
            if (opaque is None or head.request.opaque == opaque) and self._can_answer(head, response):
                pending = head
        if pending is None:
            pending = self._owner(response)
            if pending is None:
                self._stats.unmatched_responses += 1
                return
        self._after_reply_hole = False
        request = pending.request
        if pending.reply_ns is None:
            pending.reply_ns = response.start_ns
        reply = response.reply
        if request.command in _MULTI_UNIT and reply not in _ERRORS:
            if reply is _VALUE and request.protocol is _TEXT:
                self._add_hit(pending, response)
                return
            if reply is _STAT or reply is _OTHER_REPLY:
                return
        if queue[0] is pending:
            queue.popleft()
        else:
            queue.remove(pending)
        if request.command in _GET_FAMILY and request.protocol is _TEXT and reply not in _ERRORS:
            status = _MISS  # the END of a text get: its keys without a VALUE missed
        elif reply is _VALUE:
            status = _OK if request.command is _META_ARITHMETIC else _HIT
        elif reply is _HD:
            status = _HD_STATUS[request.command]
        else:
            status = REPLY_STATUS[reply]
        if status is _HIT:
            pending.hits[0] = response
        self._finish(pending, status, pending.reply_ns)

    def close(self) -> None:
        """The connection ended: whatever is still pending will never be answered."""
        while self._pending:
            pending = self._pending.popleft()
            if pending.request.quiet:
                self._finish(pending, Status.NOREPLY, None)
            else:
                self._stats.unanswered_requests += 1
                self._finish(pending, Status.UNANSWERED, None)

    def _owner(self, response: Response) -> _Pending | None:
        """The pending request this reply answers; requests passed over on the way are settled."""
        identified = self._identified(response)
        while self._pending:
            head = self._pending[0]
            if identified is not None and head is not identified:
                self._pass_over(head)
                continue
            if identified is not None or self._can_answer(head, response):
                return head
            if head.request.quiet or self._after_reply_hole:
                self._pass_over(head)
                continue
            return None
        return None

    def _identified(self, response: Response) -> _Pending | None:
        """The pending request named by the reply's opaque token (and key, where the reply returns it)."""
        if response.opaque is None or response.protocol is Protocol.TEXT:
            return None
        for pending in self._pending:
            request = pending.request
            if request.opaque != response.opaque:
                continue
            if self._can_answer(pending, response):
                return pending
        return None

    def _can_answer(self, pending: _Pending, response: Response) -> bool:
        request = pending.request
        reply = response.reply
        command = request.command
        opcode = response.binary_opcode
        if opcode is not None and request.binary_opcode is not None and opcode != request.binary_opcode:
            return False  # memcached repeats a binary request's opcode in its binary reply, errors included
        if reply in _ERRORS or command is _OTHER_COMMAND:
            return True
        key = response.key
        if key is not None and request.keys and key not in request.keys:
            return False
        if request.quiet:
            if reply is _NOOP:
                return False
            if request.protocol is _META and command in _QUIET_META_ANSWERS:
                return _quiet_meta_can_answer(request, reply)
        return reply in _ANSWERS.get(command, _NO_ANSWERS)

    def _pass_over(self, pending: _Pending) -> None:
        self._pending.popleft()
        request = pending.request
        if request.quiet:
            self._finish(pending, _SUPPRESSED[request.command], None, suppressed=True)
        else:
            self._stats.unanswered_requests += 1
            self._finish(pending, Status.UNANSWERED, None)

    def _add_hit(self, pending: _Pending, response: Response) -> None:
        keys = pending.request.keys
        hits = pending.hits
        key = response.key
        if key is None:
            index = len(hits) if len(hits) < len(keys) else -1
        elif not hits and keys and keys[0] == key:
            index = 0  # the first value of a get for its first key: what the general search below would find
        else:
            # memcached answers a multi-get in key order, skipping misses; a key may repeat in one get.
            start = max(hits, default=-1) + 1
            index = next((i for i in range(start, len(keys)) if keys[i] == key), -1)
        if index < 0:
            self._stats.unexpected_values += 1
        else:
            hits[index] = response

    def _finish(self, pending: _Pending, status: Status, reply_ns: int | None, suppressed: bool = False) -> None:
        """Emit one operation per key; in a multi-get, keys with a VALUE are hits and the rest keep `status`."""
        request = pending.request
        latency = None if reply_ns is None or suppressed else max(reply_ns - request.end_ns, 0) // 1000
        # A request's flags are recorded only with the value they came with.
        flags = None if request.value_length is None else request.flags
        value_length, flags, ttl, latency = self._fitted(request.value_length, flags, request.ttl, latency)
        row = partial(Operation, timestamp_ns=request.start_ns, connection=self._connection,
                      command=request.command.value, protocol=request.protocol.value, ttl=ttl, latency_us=latency,
                      batch=pending.batch, quiet=request.noreply or request.quiet,
                      effect=None if request.effect is None else request.effect.value, delta=request.delta,
                      initial=request.initial)
        if not request.keys:
            self._stats.operations += 1
            self._emit(row(key_hash=None, key_length=None, value_length=value_length, flags=flags,
                           status=status.value))
            return
        self._stats.operations += len(request.keys)
        for index, key in enumerate(request.keys):
            hit = pending.hits.get(index)
            if hit is None:
                self._emit(row(key_hash=self._key_hash(key), key_length=len(key), value_length=value_length,
                               flags=flags, status=status.value))
            else:
                hit_length, hit_flags, _, _ = self._fitted(hit.value_length, hit.flags, None, None)
                self._emit(row(key_hash=self._key_hash(key), key_length=len(key), value_length=hit_length,
                               flags=hit_flags, status=Status.HIT.value))

    def _fitted(self, value_length: int | None, flags: int | None, ttl: int | None,
                latency: int | None) -> tuple[int | None, int | None, int | None, int | None]:
        """The fields as their columns can hold them (limits.py); each field changed is counted."""
        if fits(value_length, flags, ttl, latency):
            return value_length, flags, ttl, latency
        value_length, flags, ttl, latency, changed = fit(value_length, flags, ttl, latency)
        self._stats.values_out_of_range += changed
        return value_length, flags, ttl, latency


def _quiet_meta_can_answer(request: Request, reply: Reply) -> bool:
    """Whether memcached sends this reply to a quiet meta command with the request's flags."""
    command = request.command
    letters = request.meta_flags
    if command is Command.META_GET and reply in _HIT_REPLIES:
        return (reply is _VALUE) == (_VALUE_FLAG in letters)  # a hit is VA with `v`, HD without
    if reply in _QUIET_META_ANSWERS[command]:
        return True
    return any(flag in letters and reply in replies for flag, replies in _QUIET_META_FLAG_ANSWERS.get(command, ()))
