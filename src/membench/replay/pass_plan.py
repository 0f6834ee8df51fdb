"""One pass of the plan: slices of profile rows in, each replay stream's request groups out (sans-IO).

The planner (plan.py) fixes the streams, cuts the profile into slices and synthesizes their keys; a PassPlan is
what one loop carries from request to request: the replies each recorded connection still had due (the depth a
request was sent at), the opaques numbered on each stream, the --rate schedule and, under `asap`, the
cross-connection key order (order.py). Requests are encoded by requests.py.

Its compiled twin (_pass_plan.pyx, selected by `new_pass_plan`) plans the same groups from the same rows;
tests/replay/test_pass_plan_twin.py holds the two equal.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple
from typing import Protocol as Interface

import numpy as np

from membench import extensions
from membench.profile.schema import Status
from membench.protocol.events import Command, Protocol
from membench.replay.ketama import Continuum
from membench.replay.options import Timing
from membench.replay.order import NO_DEPENDENCIES, KeyOrder
from membench.replay.requests import (
    CAS_CURRENT,
    CAS_NONE,
    CAS_STALE,
    VALUE_COMMANDS,
    Group,
    RequestEncoder,
    RequestShape,
)

ABSOLUTE_TTL = 60 * 60 * 24 * 30  # memcached reads larger exptimes as Unix times
_NS_PER_US = 1000
_NS_PER_S = 1_000_000_000
# A request's time in the schedule, in ns from the pass's start, saturates here (about 146 years): a --rate or
# --speed so low that its schedule leaves int64 only ever sends what is due before the replay is stopped, and the
# pass's start plus it still fits the in-flight matcher's int64.
NEVER_NS = 2**62


class SliceRows(NamedTuple):
    """A slice of the profile as numpy columns, independent of its batch's dictionaries."""

    timestamp_ns: np.ndarray
    connection: np.ndarray
    command: np.ndarray  # index into SliceNames.commands
    protocol: np.ndarray  # index into SliceNames.protocols
    keyed: np.ndarray
    key_hash: np.ndarray
    key_length: np.ndarray  # clamped
    value_length: np.ndarray  # 0 when null
    flags: np.ndarray
    ttl: np.ndarray
    latency_us: np.ndarray  # -1 when null: no reply was seen
    request: np.ndarray
    quiet: np.ndarray
    status: np.ndarray  # index into SliceNames.statuses
    delta: np.ndarray  # 1 when null
    initial: np.ndarray  # objects, None where the counter never creates its key (uint64 does not fit int64)

    def then(self, later: SliceRows) -> SliceRows:
        return SliceRows(*(np.concatenate(pair) for pair in zip(self, later, strict=True)))

    def window(self, offset: int, length: int) -> SliceRows:
        return SliceRows(*(column[offset:offset + length] for column in self))

    def split(self, at: int) -> tuple[SliceRows, SliceRows]:
        return SliceRows(*(column[:at] for column in self)), SliceRows(*(column[at:] for column in self))

    def request_starts(self) -> list[int]:
        """The first row of each request (rows of one request are contiguous and share connection and batch)."""
        starts = np.ones(len(self.request), dtype=bool)
        starts[1:] = (self.connection[1:] != self.connection[:-1]) | (self.request[1:] != self.request[:-1])
        return np.flatnonzero(starts).tolist()


@dataclass(frozen=True)
class SliceNames:
    """What the codes of a slice's dictionary columns stand for (the planner's codes grow as batches come)."""

    commands: list[Command | None]  # the logical command of each command code; None: not replayed
    protocols: list[Protocol]  # the protocol each protocol code is replayed in (--protocol applied)
    statuses: list[str]


@dataclass(frozen=True)
class ConnectionMap:
    """Which replay connection sends a recorded connection's request."""

    recorded_index: dict[int, int]  # recorded connection -> its place in the sorted recorded connections
    recorded_count: int
    replay_count: int

    def replay_connection(self, recorded: int, key_hash: int) -> int:
        index = self.recorded_index[recorded]
        if self.replay_count <= self.recorded_count:
            return index % self.replay_count
        # Spread: a recorded connection owns connections index, index + R, ...; a key always takes the same
        # one, so the order of the operations on each key is kept.
        owned = len(range(index, self.replay_count, self.recorded_count))
        return index + self.recorded_count * (key_hash % owned)


@dataclass(frozen=True)
class PlanContext:
    """What every pass of one planner plans with, fixed before its first row."""

    first_ns: int  # the profile's first timestamp
    timing: Timing
    speed: float
    rate: float | None
    pipeline: int | None
    slots: dict[Command, int]  # the slot of each replayed command
    stream_of: dict[tuple[int, int], int]  # (replay connection, target) -> stream index, this worker's only
    binaries: list[bool]  # whether each stream speaks binary
    encoder: RequestEncoder
    continuum: Continuum
    connections: ConnectionMap

    @property
    def rate_step_ns(self) -> float:
        """Nanoseconds between two requests under --rate; 0 without one."""
        return min(_NS_PER_S / self.rate, NEVER_NS) if self.timing is Timing.RATE and self.rate else 0.0


class PassPlanner(Interface):
    """What both twins do: plan one slice, whose keys are given (None where a row has none). Each stream's groups
    come as a sequence: a list here, a GroupBlock (compact rows, record/_core_groups.pxi) from the compiled twin."""

    def plan(self, rows: SliceRows, keys: list[bytes | None], names: SliceNames
             ) -> list[tuple[int, Sequence[Group]]]:
        ...


def new_pass_plan(context: PlanContext, streams: int, ordered: bool) -> PassPlanner:
    """The compiled pass where it is built (and not switched off), else the specification."""
    twin = extensions.compiled("membench.replay._pass_plan")
    if twin is not None:
        planner: PassPlanner = twin.PassPlan(context, streams, ordered)
        return planner
    return PassPlan(context, streams, ordered)


def ttl_left(ttl: int, timestamp_ns: int) -> int:
    """An absolute expiry time lies in the past by now: keep how long the item had left when it was recorded."""
    if ttl <= ABSOLUTE_TTL:
        return ttl
    remaining = ttl - timestamp_ns // _NS_PER_S
    return remaining if remaining > 0 else -1


class PassPlan:
    """One loop's planning, slice after slice: groups are numbered across the whole pass."""

    def __init__(self, context: PlanContext, streams: int, ordered: bool) -> None:
        self._context = context
        self._opaques = [0] * streams  # last opaque numbered on each stream
        self._replies_due: dict[int, list[int]] = {}  # recorded connection -> heap of its replies' times
        self._requests = 0  # recorded requests planned (the --rate schedule)
        self._planned = 0  # groups planned: their numbers
        self._order = KeyOrder() if ordered else None

    def plan(self, rows: SliceRows, keys: list[bytes | None], names: SliceNames) -> list[tuple[int, list[Group]]]:
        """(stream index, its next groups in order) for the streams this slice gives requests to."""
        context = self._context
        if context.timing is Timing.ORIGINAL:
            with np.errstate(over="ignore"):  # beyond float range: saturated anyway
                intended = np.minimum((rows.timestamp_ns - context.first_ns) / context.speed, NEVER_NS).astype(
                    np.int64).tolist()
        else:
            intended = [0] * len(rows.request)
        columns = SliceRows(*(column.tolist() for column in rows))
        starts = rows.request_starts()
        out: dict[int, list[Group]] = {}
        for start, end in zip(starts, [*starts[1:], len(rows.request)], strict=True):
            self._plan_request(columns, keys[start:end], names, start, intended[start], out)
        return list(out.items())

    def _plan_request(self, rows: SliceRows, keys: list[bytes | None], names: SliceNames, row: int,
                      intended_ns: int, out: dict[int, list[Group]]) -> None:
        """Plans the request whose rows start at `row` (`keys` are its rows' keys)."""
        context = self._context
        recorded, timestamp_ns = rows.connection[row], rows.timestamp_ns[row]
        outstanding = self._outstanding(recorded, timestamp_ns, rows.latency_us[row], rows.quiet[row])
        command = names.commands[rows.command[row]]
        if command is None:
            return
        rate_step = context.rate_step_ns
        at_ns = int(min(self._requests * rate_step, NEVER_NS)) if rate_step else intended_ns
        self._requests += 1
        key = keys[0]
        connection = context.connections.replay_connection(recorded, 0 if key is None else rows.key_hash[row])
        if (connection, 0) not in context.stream_of:
            return  # another worker's connection
        value_length = rows.value_length[row] if command in VALUE_COMMANDS else 0
        request = RequestShape(command=command, value_length=value_length, flags=rows.flags[row],
                               ttl=ttl_left(rows.ttl[row], timestamp_ns), quiet=rows.quiet[row],
                               delta=rows.delta[row], initial=rows.initial[row])
        cas = CAS_NONE
        if command is Command.CAS:
            cas = CAS_STALE if names.statuses[rows.status[row]] == Status.EXISTS else CAS_CURRENT
        protocol = names.protocols[rows.protocol[row]]
        for target, target_keys in self._per_target(keys):
            stream = context.stream_of[connection, target]
            payload, expect, units, seq = self._encode(stream, protocol, request, target_keys)
            number = self._planned
            self._planned += 1
            after = NO_DEPENDENCIES if self._order is None else self._order.dependencies(
                stream, target, number, command, target_keys)
            out.setdefault(stream, []).append(Group(
                payload=payload, slot=context.slots[command], rows=len(target_keys) or 1, expect=expect,
                units=units, at_ns=at_ns, outstanding=outstanding, seq=seq, number=number, after=after, cas=cas,
                key=target_keys[0] if cas else b""))

    def _outstanding(self, recorded: int, timestamp_ns: int, latency_us: int, quiet: bool) -> int:
        """Requests the recording had in flight on its connection when it sent this one (replies due after this
        send); 0 when --pipeline fixes the depth."""
        if self._context.pipeline is not None:
            return 0
        due = self._replies_due.setdefault(recorded, [])
        while due and due[0] <= timestamp_ns:
            heapq.heappop(due)
        outstanding = len(due)
        if latency_us >= 0 and not quiet:
            heapq.heappush(due, timestamp_ns + latency_us * _NS_PER_US)
        return outstanding

    def _per_target(self, keys: list[bytes | None]) -> list[tuple[int, list[bytes]]]:
        """The request's keys by the server they live on (a keyless request goes to every server)."""
        continuum = self._context.continuum
        if keys[0] is None:
            return [(target, []) for target in range(continuum.server_count)]
        present = [key for key in keys if key is not None]
        if continuum.server_count == 1:
            return [(0, present)]
        by_target: dict[int, list[bytes]] = {}
        for key in present:
            by_target.setdefault(continuum.server_of(key), []).append(key)
        return list(by_target.items())

    def _encode(self, stream: int, protocol: Protocol, request: RequestShape, keys: list[bytes]
                ) -> tuple[bytes, int, int, int]:
        """(payload, expect, units, seq) of the request on `stream`, which speaks binary or not whatever the
        recording spoke; opaques are numbered from seq."""
        binary = self._context.binaries[stream]
        if binary != (protocol is Protocol.BINARY):
            protocol = Protocol.BINARY if binary else Protocol.TEXT
        seq = self._opaques[stream] + 1
        encoder = self._context.encoder
        template = encoder.template(protocol, request, len(keys[0])) if len(keys) == 1 else None
        if template is not None:
            head, tail, expect, units = template
            return head + keys[0] + tail, expect, units, seq
        payload, expect, units, used = encoder.encode(protocol, request, keys, seq)
        self._opaques[stream] += used
        return payload, expect, units, seq
