"""From profile rows to what each replay connection sends: request groups, their order, timing and depth.

After the survey (survey.py), the plan (in each worker, for its connections, once per loop) turns slices of a few
thousand rows into request groups (rows sharing a `batch`) encoded on streams: one stream per replay connection
and target server, since a multi-key get whose keys live on several servers is split per server, as a client
library does. Slices are planned as the replay consumes them, so memory stays bounded and the first request goes
out at once. Under `asap` each group also says which requests of other streams must be answered before it
(order.py); requests.py encodes them.

The rows of one request are contiguous in a profile (the recorder writes a request's keys together); a request
that straddles two batches or slices is carried over whole.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from membench.errors import MembenchError
from membench.profile.schema import SCHEMA, Status
from membench.protocol.events import Command, Protocol
from membench.replay.ketama import Continuum
from membench.replay.keys import KeySynthesizer
from membench.replay.options import ReplayOptions, Timing
from membench.replay.order import NO_DEPENDENCIES, Dependency, KeyOrder
from membench.replay.requests import CAS_CURRENT, CAS_NONE, CAS_STALE, UNSEEN, RequestEncoder, RequestShape
from membench.replay.survey import (
    BatchSource,
    Survey,
    clamped_lengths,
    dictionary_indices,
    effects,
    filled,
    logical_command,
)

SLICE_ROWS = 1024  # rows planned at a time: a few milliseconds of the event loop's time at most
_ABSOLUTE_TTL = 60 * 60 * 24 * 30  # memcached reads larger exptimes as Unix times
_NS_PER_US = 1000
_NS_PER_S = 1_000_000_000

_new = tuple.__new__
# Enum members looked up once: a class attribute lookup on an enum costs as much as the rest of a comparison.
_BINARY, _TEXT = Protocol.BINARY, Protocol.TEXT
_CAS = Command.CAS


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


@dataclass(frozen=True)
class Stream:
    """One socket: replay connection `connection` to server `target`; `binary` is the protocol it speaks."""

    connection: int
    target: int
    binary: bool


class _Rows(NamedTuple):
    """A slice of the profile as numpy columns, independent of its batch's dictionaries."""

    timestamp_ns: np.ndarray
    connection: np.ndarray
    command: np.ndarray  # index into Planner's command names
    protocol: np.ndarray  # index into Planner's protocol names
    keyed: np.ndarray
    key_hash: np.ndarray
    key_length: np.ndarray  # clamped
    value_length: np.ndarray  # 0 when null
    flags: np.ndarray
    ttl: np.ndarray
    latency_us: np.ndarray  # -1 when null: no reply was seen
    request: np.ndarray
    quiet: np.ndarray
    status: np.ndarray  # index into Planner's status names
    delta: np.ndarray  # 1 when null
    initial: np.ndarray  # objects, None where the counter never creates its key (uint64 does not fit int64)

    def then(self, later: _Rows) -> _Rows:
        return _Rows(*(np.concatenate(pair) for pair in zip(self, later, strict=True)))

    def split(self, at: int) -> tuple[_Rows, _Rows]:
        return _Rows(*(column[:at] for column in self)), _Rows(*(column[at:] for column in self))


class _Codes:
    """Stable codes for dictionary names across batches (each batch has a dictionary of its own)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def of(self, column: pa.Array) -> np.ndarray:
        entries, names = dictionary_indices(column)
        table = np.array([self._code(name) for name in names], dtype=np.intp)
        return table[entries] if len(table) else entries

    def _code(self, name: str) -> int:
        code = self._index.get(name)
        if code is None:
            code = self._index[name] = len(self.names)
            self.names.append(name)
        return code


class _Pass:
    """What planning one loop carries from group to group."""

    def __init__(self, streams: int, ordered: bool) -> None:
        self.opaques = [0] * streams  # last opaque numbered on each stream
        self.replies_due: dict[int, list[int]] = {}  # recorded connection -> heap of reply times
        self.group_number = 0  # recorded requests planned (the --rate schedule)
        self.planned = 0  # groups planned: their numbers
        self.order = KeyOrder() if ordered else None


class Planner:
    """Plans the streams of the replay connections one worker owns (`connection % workers == worker`)."""

    def __init__(self, survey: Survey, options: ReplayOptions, continuum: Continuum, keys: KeySynthesizer,
                 worker: int = 0, workers: int = 1) -> None:
        self._survey = survey
        self._options = options
        self._continuum = continuum
        self._keys = keys
        self._commands = _Codes()
        self._protocols = _Codes()
        self._statuses = _Codes()
        recorded = sorted(survey.connection_protocols)
        self._recorded_index = {connection: index for index, connection in enumerate(recorded)}
        self._recorded_count = max(1, len(recorded))
        self._replay_count = options.connections or self._recorded_count
        # Slots are fixed before the first row is planned: every logical command the profile replays.
        self.commands: list[str] = sorted(survey.recorded)
        self._slots = {Command(name): slot for slot, name in enumerate(self.commands)}
        self._encoder = RequestEncoder(uniques_needed=Command.CAS in self._slots)
        self.streams: list[Stream] = []
        self._stream_of: dict[tuple[int, int], int] = {}
        for connection, binary in sorted(self._replay_protocols().items()):
            if connection % workers != worker:
                continue
            for target in range(continuum.server_count):
                self._stream_of[connection, target] = len(self.streams)
                self.streams.append(Stream(connection, target, binary))

    def _replay_protocols(self) -> dict[int, bool]:
        """Whether each replay connection speaks binary: as the first recorded connection it replays did."""
        binary: dict[int, bool] = {}
        forced = self._options.protocol
        for recorded, protocol in self._survey.connection_protocols.items():
            speaks_binary = (forced or Protocol(protocol)) is Protocol.BINARY
            index = self._recorded_index[recorded]
            if self._replay_count <= self._recorded_count:
                binary.setdefault(index % self._replay_count, speaks_binary)
            else:
                for connection in range(index, self._replay_count, self._recorded_count):
                    binary.setdefault(connection, speaks_binary)
        return binary

    def plan(self, source: BatchSource) -> Iterator[list[tuple[int, list[Group]]]]:
        """One loop's plan, a slice at a time: (stream index, its next groups in order) for the streams that have
        some. A fresh call starts a fresh loop."""
        # Open-loop timings keep the recorded schedule; as fast as possible keeps the recorded order instead.
        state = _Pass(len(self.streams), ordered=self._options.timing is Timing.ASAP and self._options.key_order)
        carry: _Rows | None = None
        for batch in source():
            for offset in range(0, batch.num_rows, SLICE_ROWS):
                rows = self._rows(batch.slice(offset, SLICE_ROWS))
                if carry is not None:
                    rows = carry.then(rows)
                # The last request may go on in the next slice: it waits for it.
                last = len(rows.request) - 1
                start = last
                while start > 0 and rows.request[start - 1] == rows.request[last] and (
                        rows.connection[start - 1] == rows.connection[last]):
                    start -= 1
                rows, carry = rows.split(start)
                if len(rows.request):
                    yield self._plan_rows(rows, state)
        if carry is not None:
            yield self._plan_rows(carry, state)

    def _rows(self, batch: pa.RecordBatch) -> _Rows:
        if batch.schema.names != SCHEMA.names:
            raise MembenchError("the profile's columns are not those of a membench profile")
        column = batch.column
        return _Rows(
            timestamp_ns=column("timestamp_ns").to_numpy(),
            connection=column("connection").to_numpy().astype(np.int64),
            command=self._commands.of(effects(batch)),
            protocol=self._protocols.of(column("protocol")),
            keyed=~np.asarray(column("key_hash").is_null()),
            key_hash=filled(column("key_hash"), 0),
            key_length=clamped_lengths(column("key_length")),
            value_length=filled(column("value_length"), 0),
            flags=filled(column("flags"), 0),
            ttl=filled(column("ttl"), 0),
            latency_us=filled(column("latency_us").cast(pa.int64()), -1),
            request=column("batch").to_numpy(),
            quiet=column("quiet").to_numpy(zero_copy_only=False),
            status=self._statuses.of(column("status")),
            delta=column("delta").fill_null(1).to_numpy(zero_copy_only=False),
            initial=np.array(column("initial").to_pylist(), dtype=object),
        )

    def _plan_rows(self, rows: _Rows, state: _Pass) -> list[tuple[int, list[Group]]]:
        count = len(rows.request)
        starts_mask = np.ones(count, dtype=bool)
        starts_mask[1:] = (rows.connection[1:] != rows.connection[:-1]) | (rows.request[1:] != rows.request[:-1])
        starts = np.flatnonzero(starts_mask).tolist()
        ends = [*starts[1:], count]
        keys: list[bytes | None] = [None] * count
        keyed = np.flatnonzero(rows.keyed)
        if len(keyed):
            for row, key in zip(keyed.tolist(), self._keys.keys(rows.key_hash[keyed], rows.key_length[keyed]),
                                strict=True):
                keys[row] = key
        options = self._options
        if options.timing is Timing.ORIGINAL:
            intended = ((rows.timestamp_ns - self._survey.first_ns) / options.speed).astype(np.int64).tolist()
        else:
            intended = [0] * count
        rate_step = _NS_PER_S / options.rate if options.timing is Timing.RATE and options.rate else 0.0
        track_depth = options.pipeline is None
        replies_due = state.replies_due
        heappop, heappush = heapq.heappop, heapq.heappush
        logical = [logical_command(name) for name in self._commands.names]
        protocols = [options.protocol or Protocol(name) for name in self._protocols.names]
        timestamps = rows.timestamp_ns.tolist()
        connections = rows.connection.tolist()
        commands = rows.command.tolist()
        protocol_codes = rows.protocol.tolist()
        latencies = rows.latency_us.tolist()
        quiets = rows.quiet.tolist()
        hashes = rows.key_hash.tolist()
        value_lengths = rows.value_length.tolist()
        flags = rows.flags.tolist()
        ttls = rows.ttl.tolist()
        deltas = rows.delta.tolist()
        statuses = rows.status.tolist()
        status_names = self._statuses.names
        initials = rows.initial.tolist()
        server_count = self._continuum.server_count
        stream_of = self._stream_of
        binaries = [stream.binary for stream in self.streams]
        opaques = state.opaques
        order = state.order
        templates = self._encoder.templates
        out: dict[int, list[Group]] = {}
        for start, end in zip(starts, ends, strict=True):
            recorded = connections[start]
            timestamp_ns = timestamps[start]
            quiet = quiets[start]
            outstanding = 0
            if track_depth:
                # Requests the recording had in flight: replies due (send time + latency) after this send.
                due = replies_due.get(recorded)
                if due is None:
                    due = replies_due[recorded] = []
                while due and due[0] <= timestamp_ns:
                    heappop(due)
                outstanding = len(due)
                latency_us = latencies[start]
                if latency_us >= 0 and not quiet:
                    heappush(due, timestamp_ns + latency_us * _NS_PER_US)
            command = logical[commands[start]]
            if command is None:
                continue
            at_ns = int(state.group_number * rate_step) if rate_step else intended[start]
            state.group_number += 1
            key = keys[start]
            connection = self._replay_connection(recorded, 0 if key is None else hashes[start])
            if (connection, 0) not in stream_of:
                continue  # another worker's connection
            ttl = ttls[start]
            if ttl > _ABSOLUTE_TTL:
                # An absolute expiry time lies in the past by now: keep how long the item had left when recorded.
                remaining = ttl - timestamp_ns // _NS_PER_S
                ttl = remaining if remaining > 0 else -1
            request = _new(RequestShape, (command, value_lengths[start], flags[start], ttl, quiet, deltas[start],
                                      initials[start]))
            protocol = protocols[protocol_codes[start]]
            slot = self._slots[command]
            splits: Iterable[tuple[int, list[bytes]]]
            if key is None:
                splits = [(target, []) for target in range(server_count)]
            elif server_count == 1:
                splits = ((0, [key] if end - start == 1 else [k for k in keys[start:end] if k is not None]),)
            else:
                by_target: dict[int, list[bytes]] = {}
                for each in keys[start:end]:
                    if each is not None:
                        by_target.setdefault(self._continuum.server_of(each), []).append(each)
                splits = by_target.items()
            for target, target_keys in splits:
                index = stream_of[connection, target]
                stream_protocol = protocol
                if binaries[index] != (protocol is _BINARY):
                    stream_protocol = _BINARY if binaries[index] else _TEXT
                seq = opaques[index] + 1
                template = None
                if len(target_keys) == 1:
                    shape = (stream_protocol, request, len(target_keys[0]))
                    template = templates.get(shape, UNSEEN)
                    if template is UNSEEN:
                        template = self._encoder.template(stream_protocol, request, len(target_keys[0]))
                if template is not None:
                    head, tail, expect, units = template
                    payload = head + target_keys[0] + tail
                else:
                    payload, expect, units, used = self._encoder.encode(stream_protocol, request, target_keys, seq)
                    opaques[index] += used
                groups = out.get(index)
                if groups is None:
                    groups = out[index] = []
                cas, cas_key = CAS_NONE, b""
                if command is _CAS:
                    cas = CAS_STALE if status_names[statuses[start]] == Status.EXISTS else CAS_CURRENT
                    cas_key = target_keys[0]
                number = state.planned
                state.planned += 1
                after = NO_DEPENDENCIES if order is None else order.dependencies(index, target, number, command,
                                                                                 target_keys)
                # tuple.__new__ skips the NamedTuple's Python-level constructor: a group per request adds up.
                groups.append(_new(Group, (payload, slot, len(target_keys) or 1, expect, units, at_ns, outstanding,
                                           seq, number, after, cas, cas_key)))
        return list(out.items())

    def _replay_connection(self, recorded: int, key_hash: int) -> int:
        index = self._recorded_index[recorded]
        if self._replay_count <= self._recorded_count:
            return index % self._replay_count
        # Spread: a recorded connection owns connections index, index + R, ...; a key always takes the same
        # one, so the order of the operations on each key is kept.
        owned = len(range(index, self._replay_count, self._recorded_count))
        return index + self._recorded_count * (key_hash % owned)

