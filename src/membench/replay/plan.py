"""From profile rows to what each replay connection sends: encoded requests, their order, timing and depth.

Two passes over the profile's column batches. The survey (once, in the parent) reads what must be known about
the whole profile before a single key is made: the short keys (their collisions are resolved globally), each
connection's protocol, the keys to warm, the recorded outcomes. The plan (in each worker, for its connections)
turns request groups (rows sharing a `batch`) into encoded requests on streams: one stream per replay connection
and target server, since a multi-key get whose keys live on several servers is split per server, as a client
library does.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from membench.errors import MembenchError
from membench.profile.schema import SCHEMA, Status
from membench.protocol.encode import META_NOOP, binary_noop, encode_binary, encode_meta, encode_text
from membench.protocol.events import Command, Protocol
from membench.replay.ketama import Continuum
from membench.replay.keys import KeySynthesizer, ValueSource, clamp_length
from membench.replay.options import ReplayOptions, Timing

BatchSource = Callable[[], Iterator[pa.RecordBatch]]
"""Gives the profile's rows (schema.SCHEMA) from the start, each time it is called."""

# How a request group's replies end.
EXPECT_NONE = 0  # text noreply: nothing comes back
EXPECT_UNITS = 1  # exactly `units` replies
EXPECT_END = 2  # VALUE/STAT replies up to END (text get family, stats)
EXPECT_NOOP = 3  # quiet requests closed by our own noop: replies up to the noop's
EXPECT_QUIET = 4  # one quiet request: done at its own unsuppressed reply or at any later request's reply

INTERNAL_SLOT = -1  # requests membench adds (the noop that drains quiet requests): never counted

# The logical command each recorded command is replayed as; commands not listed are not replayed.
_LOGICAL: dict[str, Command] = {
    **{c.value: c for c in (Command.GET, Command.GETS, Command.GAT, Command.GATS, Command.SET, Command.ADD,
                            Command.REPLACE, Command.APPEND, Command.PREPEND, Command.CAS, Command.DELETE,
                            Command.INCR, Command.DECR, Command.TOUCH, Command.FLUSH_ALL, Command.VERSION,
                            Command.STATS, Command.VERBOSITY, Command.NOOP)},
    Command.META_GET.value: Command.GET,
    Command.META_SET.value: Command.SET,
    Command.META_DELETE.value: Command.DELETE,
    Command.META_ARITHMETIC.value: Command.INCR,
    Command.META_NOOP.value: Command.NOOP,
}
RETRIEVALS = frozenset({Command.GET, Command.GETS, Command.GAT, Command.GATS})
_STORES = frozenset({Command.SET, Command.ADD, Command.REPLACE, Command.APPEND, Command.PREPEND, Command.CAS})
_WITH_VALUE = _STORES

# Outcomes showing that the key existed before this operation: the recording's "hit before any write".
_PRESENT: dict[Command, frozenset[str]] = {
    **dict.fromkeys(RETRIEVALS, frozenset({Status.HIT})),
    Command.TOUCH: frozenset({Status.TOUCHED}),
    Command.DELETE: frozenset({Status.DELETED}),
    Command.INCR: frozenset({Status.OK}),
    Command.DECR: frozenset({Status.OK}),
    Command.ADD: frozenset({Status.NOT_STORED}),
    Command.REPLACE: frozenset({Status.STORED}),
    Command.APPEND: frozenset({Status.STORED}),
    Command.PREPEND: frozenset({Status.STORED}),
    Command.CAS: frozenset({Status.STORED, Status.EXISTS}),
}
_DEFAULT_WARM_SIZE = 1  # a key known to exist whose size the recording never saw (deleted or touched first)
_ABSOLUTE_TTL = 60 * 60 * 24 * 30  # memcached reads larger exptimes as Unix times
_NS_PER_US = 1000
_NS_PER_S = 1_000_000_000


def logical_command(recorded: str) -> Command | None:
    return _LOGICAL.get(recorded)


class Group(NamedTuple):
    """One request as a stream sends it (a multi-key get is one group)."""

    payload: bytes
    slot: int  # index of the command in Plan.commands, or INTERNAL_SLOT
    rows: int  # profile rows (key operations) it carries
    expect: int
    units: int  # replies that end it, for EXPECT_UNITS
    at_ns: int  # intended send time from the start of the loop (open-loop timings)
    outstanding: int  # requests the recording had in flight on its connection when it sent this one
    seq: int  # opaque of its first request (binary always, meta when quiet)
    seq_end: int  # one past the opaque of its last request


@dataclass
class Stream:
    """The requests one socket sends: replay connection `connection` to server `target`, in order."""

    connection: int
    target: int
    binary: bool
    groups: list[Group] = field(default_factory=list)
    last_opaque: int = 0

    def next_opaque(self) -> int:
        """Requests are numbered from 1 in the order the stream sends them."""
        self.last_opaque += 1
        return self.last_opaque


@dataclass
class Survey:
    """What the whole profile says, before any key is made."""

    rows: int = 0
    first_ns: int = 0
    last_ns: int = 0
    connection_protocols: dict[int, str] = field(default_factory=dict)
    short_pairs: set[tuple[int, int]] = field(default_factory=set)
    recorded: dict[str, Counter[str]] = field(default_factory=dict)  # logical command -> status -> rows
    skipped: Counter[str] = field(default_factory=Counter)  # recorded commands a replay does not send
    warm: dict[tuple[int, int], int] = field(default_factory=dict)  # (hash, length) -> value size
    requests: int = 0


_SURVEY_COLUMNS = ["timestamp_ns", "connection", "command", "protocol", "key_hash", "key_length", "value_length",
                   "status", "batch"]


def _columns(batch: pa.RecordBatch, names: list[str]) -> list[list]:
    return [batch.column(name).to_pylist() for name in names]


def survey(source: BatchSource) -> Survey:
    result = Survey()
    seen: set[tuple[int, int]] = set()
    pending_size: set[tuple[int, int]] = set()  # warm keys whose size is still unknown
    last_batch: dict[int, int] = {}
    first = last = None
    for batch in source():
        if batch.schema.names != SCHEMA.names:
            raise MembenchError("the profile's columns are not those of a membench profile")
        result.rows += batch.num_rows
        timestamps = batch.column("timestamp_ns")
        if len(timestamps):
            low, high = int(np.min(timestamps)), int(np.max(timestamps))
            first = low if first is None else min(first, low)
            last = high if last is None else max(last, high)
        for (_, connection, command, protocol, key_hash, key_length, value_length, status, request) in zip(
            *_columns(batch, _SURVEY_COLUMNS), strict=True
        ):
            result.connection_protocols.setdefault(connection, protocol)
            if last_batch.get(connection) != request:
                last_batch[connection] = request
                result.requests += 1
            logical = _LOGICAL.get(command)
            if logical is None:
                result.skipped[command] += 1
                continue
            result.recorded.setdefault(logical.value, Counter())[status] += 1
            if key_hash is None:
                continue
            pair = (key_hash, clamp_length(key_length))
            if KeySynthesizer.is_short(pair[1]):
                result.short_pairs.add(pair)
            if pair not in seen:
                seen.add(pair)
                if status in _PRESENT.get(logical, ()):
                    if logical in RETRIEVALS and value_length is not None:
                        result.warm[pair] = value_length
                    else:
                        result.warm[pair] = _DEFAULT_WARM_SIZE
                        pending_size.add(pair)
            elif pair in pending_size and logical in RETRIEVALS and status == Status.HIT and value_length:
                result.warm[pair] = value_length
                pending_size.discard(pair)
    result.first_ns = first or 0
    result.last_ns = last or 0
    return result


@dataclass
class Plan:
    commands: list[str]  # slot -> logical command name
    streams: list[Stream]
    groups: int
    rows: int


class _Encoder:
    """Encodes one request group for one server in one protocol, numbering opaques per stream."""

    def __init__(self, values: ValueSource) -> None:
        self._values = values

    def encode(self, stream: Stream, protocol: Protocol, command: Command, keys: list[bytes], row: _Row,
               quiet: bool) -> tuple[bytes, int, int]:
        """(payload, expect, units); advances the stream's opaque counter."""
        send_as = Command.SET if command is Command.CAS else command  # a recorded cas unique means nothing here
        value = self._values.value(row.value_length or 0) if command in _WITH_VALUE else b""
        if protocol is Protocol.BINARY:
            return self._binary(stream, send_as, keys, value, row, quiet)
        if protocol is Protocol.META and keys:
            return self._meta(stream, send_as, keys, value, row, quiet)
        if send_as in RETRIEVALS:
            return encode_text(send_as, keys, ttl=row.ttl), EXPECT_END, 0
        noreply = quiet and send_as not in (Command.VERSION, Command.STATS, Command.NOOP)
        payload = encode_text(send_as, keys, value=value, flags=row.flags, ttl=row.ttl, noreply=noreply)
        if noreply:
            return payload, EXPECT_NONE, 0
        return payload, EXPECT_END if send_as is Command.STATS else EXPECT_UNITS, 1

    def _meta(self, stream: Stream, command: Command, keys: list[bytes], value: bytes, row: _Row,
              quiet: bool) -> tuple[bytes, int, int]:
        if not quiet:
            payload = b"".join(encode_meta(command, key, value=value, flags=row.flags, ttl=row.ttl) for key in keys)
            return payload, EXPECT_UNITS, len(keys)
        parts = []
        for key in keys:
            parts.append(encode_meta(command, key, value=value, flags=row.flags, ttl=row.ttl, quiet=True,
                                     opaque=stream.next_opaque()))
        if len(keys) == 1:
            return parts[0], EXPECT_QUIET, 0
        parts.append(META_NOOP)
        return b"".join(parts), EXPECT_NOOP, 0

    def _binary(self, stream: Stream, command: Command, keys: list[bytes], value: bytes, row: _Row,
                quiet: bool) -> tuple[bytes, int, int]:
        if command is Command.NOOP:
            return binary_noop(stream.next_opaque()), EXPECT_UNITS, 1
        if len(keys) > 1:
            parts = [encode_binary(command, key, ttl=row.ttl, quiet=True, with_key=True, opaque=stream.next_opaque())
                     for key in keys]
            parts.append(binary_noop(stream.next_opaque()))
            return b"".join(parts), EXPECT_NOOP, 0
        can_be_quiet = quiet and command not in (Command.TOUCH, Command.VERSION, Command.STATS, Command.VERBOSITY)
        payload = encode_binary(command, keys[0] if keys else b"", value=value, flags=row.flags, ttl=row.ttl,
                                quiet=can_be_quiet, opaque=stream.next_opaque())
        if can_be_quiet:
            return payload, EXPECT_QUIET, 0
        return payload, EXPECT_END if command is Command.STATS else EXPECT_UNITS, 1


class _Row(NamedTuple):
    timestamp_ns: int
    value_length: int | None
    flags: int
    ttl: int
    latency_us: int | None


_PLAN_COLUMNS = ["timestamp_ns", "connection", "command", "protocol", "key_hash", "key_length", "value_length",
                 "flags", "ttl", "latency_us", "batch", "quiet"]


class Planner:
    """Builds the streams of the replay connections one worker owns (`connection % workers == worker`)."""

    def __init__(self, survey: Survey, options: ReplayOptions, continuum: Continuum, keys: KeySynthesizer,
                 worker: int = 0, workers: int = 1) -> None:
        self._survey = survey
        self._options = options
        self._continuum = continuum
        self._keys = keys
        self._worker = worker
        self._workers = workers
        self._encoder = _Encoder(ValueSource())
        self._recorded_index = {c: i for i, c in enumerate(sorted(survey.connection_protocols))}
        self._recorded_count = max(1, len(self._recorded_index))
        self._replay_count = options.connections or self._recorded_count
        self._streams: dict[tuple[int, int], Stream] = {}
        self._slots: dict[str, int] = {}
        self._replies_due: dict[int, list[int]] = {}  # recorded connection -> heap of reply times
        self._server_of: dict[bytes, int] = {}
        self._group_number = 0
        self._groups = 0
        self._rows = 0

    def build(self, source: BatchSource) -> Plan:
        current: dict[int, list[tuple]] = {}
        for batch in source():
            for row in zip(*_columns(batch, _PLAN_COLUMNS), strict=True):
                connection, request = row[1], row[10]
                rows = current.get(connection)
                if rows is not None and rows[0][10] != request:
                    self._group(connection, rows)
                    rows = None
                if rows is None:
                    current[connection] = [row]
                else:
                    rows.append(row)
        for connection, rows in current.items():
            self._group(connection, rows)
        commands = [name for name, _ in sorted(self._slots.items(), key=lambda item: item[1])]
        streams = sorted(self._streams.values(), key=lambda s: (s.connection, s.target))
        return Plan(commands, streams, self._groups, self._rows)

    def _replay_connection(self, recorded: int, key_hash: int | None) -> int:
        index = self._recorded_index[recorded]
        if self._replay_count <= self._recorded_count:
            return index % self._replay_count
        # Spread: a recorded connection owns connections index, index + R, ...; a key always takes the same
        # one, so the order of the operations on each key is kept.
        owned = len(range(index, self._replay_count, self._recorded_count))
        return index + self._recorded_count * ((key_hash or 0) % owned)

    def _intended_ns(self, timestamp_ns: int) -> int:
        timing = self._options.timing
        if timing is Timing.ORIGINAL:
            return int((timestamp_ns - self._survey.first_ns) / self._options.speed)
        if timing is Timing.RATE and self._options.rate:
            return int(self._group_number * _NS_PER_S / self._options.rate)
        return 0

    def _outstanding(self, recorded: int, timestamp_ns: int, latency_us: int | None, quiet: bool) -> int:
        due = self._replies_due.setdefault(recorded, [])
        while due and due[0] <= timestamp_ns:
            heapq.heappop(due)
        outstanding = len(due)
        if latency_us is not None and not quiet:
            heapq.heappush(due, timestamp_ns + latency_us * _NS_PER_US)
        return outstanding

    def _slot(self, command: Command) -> int:
        slot = self._slots.get(command.value)
        if slot is None:
            slot = self._slots[command.value] = len(self._slots)
        return slot

    def _server(self, key: bytes) -> int:
        server = self._server_of.get(key)
        if server is None:
            server = self._server_of[key] = self._continuum.server_of(key)
        return server

    def _group(self, recorded: int, rows: list[tuple]) -> None:
        first = rows[0]
        timestamp_ns, _, command_name, protocol_name, key_hash = first[:5]
        latency_us, quiet = first[9], first[11]
        outstanding = self._outstanding(recorded, timestamp_ns, latency_us, quiet)
        command = _LOGICAL.get(command_name)
        if command is None:
            return
        at_ns = self._intended_ns(timestamp_ns)
        self._group_number += 1
        connection = self._replay_connection(recorded, key_hash)
        if connection % self._workers != self._worker:
            return
        ttl = first[8] or 0
        if ttl > _ABSOLUTE_TTL:
            # An absolute expiry time lies in the past by now: keep how long the item had left when recorded.
            remaining = ttl - timestamp_ns // _NS_PER_S
            ttl = remaining if remaining > 0 else -1
        row = _Row(timestamp_ns, first[6], first[7] or 0, ttl, latency_us)
        protocol = self._options.protocol or Protocol(protocol_name)
        slot = self._slot(command)
        by_target: dict[int, list[bytes]] = {}
        if key_hash is None:
            for target in range(self._continuum.server_count):
                by_target[target] = []
        else:
            for values in rows:
                if values[4] is None:
                    continue
                key = self._keys.key(values[4], clamp_length(values[5]))
                by_target.setdefault(self._server(key), []).append(key)
        for target, keys in by_target.items():
            stream = self._stream(connection, target, protocol)
            stream_protocol = protocol
            if stream.binary != (protocol is Protocol.BINARY):
                stream_protocol = Protocol.BINARY if stream.binary else Protocol.TEXT
            seq = stream.last_opaque + 1
            payload, expect, units = self._encoder.encode(stream, stream_protocol, command, keys, row, quiet)
            group_rows = len(keys) or 1
            stream.groups.append(Group(payload, slot, group_rows, expect, units, at_ns, outstanding, seq,
                                       stream.last_opaque + 1))
            self._groups += 1
            self._rows += group_rows

    def _stream(self, connection: int, target: int, protocol: Protocol) -> Stream:
        stream = self._streams.get((connection, target))
        if stream is None:
            stream = self._streams[connection, target] = Stream(connection, target, protocol is Protocol.BINARY)
        return stream
