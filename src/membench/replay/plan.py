"""From profile rows to what each replay connection sends: encoded requests, their order, timing and depth.

Two passes over the profile's column batches, both streaming. The survey (once, in the parent, vectorized per
batch) reads what must be known about the whole profile before a single key is made: the short keys (their
collisions are resolved globally), each connection's protocol, the keys to warm, the recorded outcomes. The plan
(in each worker, for its connections, once per loop) turns slices of a few thousand rows into request groups
(rows sharing a `batch`) encoded on streams: one stream per replay connection and target server, since a
multi-key get whose keys live on several servers is split per server, as a client library does. Slices are
planned as the replay consumes them, so memory stays bounded and the first request goes out at once.

The rows of one request are contiguous in a profile (the recorder writes a request's keys together); a request
that straddles two batches or slices is carried over whole.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from membench.errors import MembenchError
from membench.profile.schema import SCHEMA, Status
from membench.protocol.encode import META_NOOP, binary_noop, encode_binary, encode_meta, encode_text
from membench.protocol.events import RETRIEVAL_COMMANDS, STORAGE_COMMANDS, Command, Protocol
from membench.replay.ketama import Continuum
from membench.replay.keys import MAX_KEY_LENGTH, KeySynthesizer, ValueSource
from membench.replay.options import ReplayOptions, Timing
from membench.replay.order import NO_DEPENDENCIES, Dependency, KeyOrder

BatchSource = Callable[[], Iterator[pa.RecordBatch]]
"""Gives the profile's rows (schema.SCHEMA) from the start, each time it is called."""

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

SLICE_ROWS = 1024  # rows planned at a time: a few milliseconds of the event loop's time at most

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
RETRIEVALS = RETRIEVAL_COMMANDS - {Command.META_GET}  # replay plans logical commands: mg is planned as get
_WITH_VALUE = STORAGE_COMMANDS - {Command.META_SET}

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


_new = tuple.__new__
# Enum members looked up once: a class attribute lookup on an enum costs as much as the rest of a comparison.
_BINARY, _META, _TEXT = Protocol.BINARY, Protocol.META, Protocol.TEXT
_GET, _CAS, _STATS = Command.GET, Command.CAS, Command.STATS
_UNSEEN: tuple[bytes, bytes, int, int] | None = (b"", b"", -1, -1)  # a shape not encoded yet (compared by identity)
_TEMPLATES = 4096  # request shapes remembered (value sizes vary in real profiles): starts over when full
_ALWAYS_ANSWERED = frozenset({Command.VERSION, Command.STATS, Command.NOOP})  # text has no noreply form of these


def logical_command(recorded: str) -> Command | None:
    return _LOGICAL.get(recorded)


def _effects(batch: pa.RecordBatch) -> pa.Array:
    """What each row did to the server, by command name: its recorded effect (schema 2: meta modes, mg T) where
    there is one, else its command."""
    command = batch.column("command").cast(pa.string())
    effect = batch.column("effect")
    if effect.null_count == len(effect):
        return command
    return pc.coalesce(effect.cast(pa.string()), command)


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


@dataclass
class Survey:
    """What the whole profile says, before any key is made."""

    rows: int = 0
    first_ns: int = 0
    last_ns: int = 0
    connection_protocols: dict[int, str] = field(default_factory=dict)  # in order of first appearance
    short_pairs: set[tuple[int, int]] = field(default_factory=set)
    recorded: dict[str, Counter[str]] = field(default_factory=dict)  # logical command -> status -> rows
    skipped: Counter[str] = field(default_factory=Counter)  # recorded commands a replay does not send
    warm: dict[tuple[int, int], int] = field(default_factory=dict)  # (hash, length) -> value size
    requests: int = 0


def _dictionary(column: pa.Array) -> tuple[np.ndarray, list[str]]:
    """A dictionary column as (row -> entry index, entry names)."""
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    return column.indices.to_numpy(zero_copy_only=False).astype(np.intp), column.dictionary.to_pylist()


def _filled(column: pa.Array, fill: int) -> np.ndarray:
    return column.fill_null(fill).to_numpy(zero_copy_only=False)


def _clamped_lengths(column: pa.Array) -> np.ndarray:
    """clamp_length over a column: memcached keys have 1 to 250 bytes."""
    return np.clip(_filled(column, 0).astype(np.int64), 1, MAX_KEY_LENGTH)


def _first_of_each_pair(hashes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct (hash, length) pair (lexsort is stable)."""
    order = np.lexsort((lengths, hashes))
    ordered_hashes, ordered_lengths = hashes[order], lengths[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (ordered_hashes[1:] != ordered_hashes[:-1]) | (ordered_lengths[1:] != ordered_lengths[:-1])
    return order[starts]


def survey(source: BatchSource) -> Survey:
    result = Survey()
    seen: set[tuple[int, int]] = set()
    pending_size: set[tuple[int, int]] = set()  # warm keys whose size is still unknown
    last_request: tuple[int, int] | None = None
    first = last = None
    for batch in source():
        if batch.schema.names != SCHEMA.names:
            raise MembenchError("the profile's columns are not those of a membench profile")
        if not batch.num_rows:
            continue
        result.rows += batch.num_rows
        timestamps = batch.column("timestamp_ns").to_numpy()
        low, high = int(timestamps.min()), int(timestamps.max())
        first = low if first is None else min(first, low)
        last = high if last is None else max(last, high)
        connections = batch.column("connection").to_numpy().astype(np.int64)
        requests = batch.column("batch").to_numpy()
        new_request = np.ones(len(connections), dtype=bool)
        new_request[1:] = (connections[1:] != connections[:-1]) | (requests[1:] != requests[:-1])
        new_request[0] = last_request != (int(connections[0]), int(requests[0]))
        result.requests += int(new_request.sum())
        last_request = (int(connections[-1]), int(requests[-1]))
        protocol_index, protocol_names = _dictionary(batch.column("protocol"))
        firsts = np.unique(connections, return_index=True)[1]
        for row in np.sort(firsts).tolist():
            result.connection_protocols.setdefault(int(connections[row]), protocol_names[protocol_index[row]])

        command_index, command_names = _dictionary(_effects(batch))
        status_index, status_names = _dictionary(batch.column("status"))
        logical = [_LOGICAL.get(name) for name in command_names]
        pair_counts = np.bincount(command_index * len(status_names) + status_index,
                                  minlength=len(command_names) * len(status_names))
        for code in np.flatnonzero(pair_counts).tolist():
            command, status = divmod(code, len(status_names))
            count = int(pair_counts[code])
            if logical[command] is None:
                result.skipped[command_names[command]] += count
            else:
                result.recorded.setdefault(logical[command].value, Counter())[status_names[status]] += count

        replayed = np.array([command is not None for command in logical])[command_index]
        keyed = replayed & ~np.asarray(batch.column("key_hash").is_null())
        rows = np.flatnonzero(keyed)
        if not len(rows):
            continue
        hashes = _filled(batch.column("key_hash"), 0)[rows]
        lengths = _clamped_lengths(batch.column("key_length"))[rows]
        short = lengths < 10
        if short.any():
            result.short_pairs.update(zip(hashes[short].tolist(), lengths[short].tolist(), strict=True))
        present = np.array([[status in _PRESENT.get(command, ()) if command else False for status in status_names]
                            for command in logical], dtype=bool)[command_index[rows], status_index[rows]]
        # A counter that may have created its key answers the same whether it did or not: the recording does not
        # show the key was there before it, and the replay will create it as the recording may have.
        present &= np.asarray(batch.column("initial").is_null())[rows]
        retrieval = np.array([command in RETRIEVALS for command in logical], dtype=bool)[command_index[rows]]
        value_lengths = batch.column("value_length").take(pa.array(rows)).to_pylist()
        for row in _first_of_each_pair(hashes, lengths).tolist():
            pair = (int(hashes[row]), int(lengths[row]))
            if pair in seen:
                continue
            seen.add(pair)
            if present[row]:
                if retrieval[row] and value_lengths[row] is not None:
                    result.warm[pair] = value_lengths[row]
                else:
                    result.warm[pair] = _DEFAULT_WARM_SIZE
                    pending_size.add(pair)
        if pending_size:
            # A later hit tells the size of a key first seen without one (never the first occurrence itself:
            # a pending key's first row was no retrieval with a size).
            hit = status_names.index(Status.HIT) if Status.HIT in status_names else -1
            sized = np.flatnonzero(retrieval & (status_index[rows] == hit)
                                   & (_filled(batch.column("value_length"), 0)[rows] > 0))
            for row in sized[_first_of_each_pair(hashes[sized], lengths[sized])].tolist():
                pair = (int(hashes[row]), int(lengths[row]))
                if pair in pending_size:
                    result.warm[pair] = value_lengths[row]
                    pending_size.discard(pair)
    result.first_ns = first or 0
    result.last_ns = last or 0
    return result


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
        entries, names = _dictionary(column)
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
        self._values = ValueSource()
        self._templates: dict[tuple[Protocol, _Request, int], tuple[bytes, bytes, int, int] | None] = {}
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
        self._uniques_needed = Command.CAS in self._slots
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
        state = _Pass(len(self.streams), ordered=self._options.timing is Timing.ASAP)
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
            command=self._commands.of(_effects(batch)),
            protocol=self._protocols.of(column("protocol")),
            keyed=~np.asarray(column("key_hash").is_null()),
            key_hash=_filled(column("key_hash"), 0),
            key_length=_clamped_lengths(column("key_length")),
            value_length=_filled(column("value_length"), 0),
            flags=_filled(column("flags"), 0),
            ttl=_filled(column("ttl"), 0),
            latency_us=_filled(column("latency_us").cast(pa.int64()), -1),
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
        logical = [_LOGICAL.get(name) for name in self._commands.names]
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
        templates = self._templates
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
            request = _new(_Request, (command, value_lengths[start], flags[start], ttl, quiet, deltas[start],
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
                    template = templates.get(shape, _UNSEEN)
                    if template is _UNSEEN:
                        template = self._template(stream_protocol, request, len(target_keys[0]))
                if template is not None:
                    head, tail, expect, units = template
                    payload = head + target_keys[0] + tail
                else:
                    payload, expect, units, used = self._encode(stream_protocol, request, target_keys, seq)
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

    def _template(self, protocol: Protocol, request: _Request, key_length: int
                  ) -> tuple[bytes, bytes, int, int] | None:
        """What a one-key request of this shape encodes to around its key (head, tail, expect, units); None when
        it carries an opaque. Requests repeat a few shapes, and concatenating is cheaper than encoding."""
        placeholder = b"\x00" * key_length  # a byte no text or meta request holds elsewhere
        payload, expect, units, used = self._encode(protocol, request, [placeholder], 1)
        template = None
        if not used:
            head, _, tail = payload.partition(placeholder)
            template = (head, tail, expect, units)
        if len(self._templates) >= _TEMPLATES:
            self._templates.clear()
        self._templates[protocol, request, key_length] = template
        return template

    def _encode(self, protocol: Protocol, request: _Request, keys: list[bytes], seq: int
                ) -> tuple[bytes, int, int, int]:
        """(payload, expect, units, opaques used); quiet requests and binary ones are numbered from `seq`."""
        send_as = command = request.command
        if command is _GET and self._uniques_needed:
            send_as = Command.GETS  # counted as the same get, and its reply shows the unique a later cas needs
        value = self._values.value(request.value_length) if command in _WITH_VALUE else b""
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


class _Request(NamedTuple):
    command: Command
    value_length: int
    flags: int
    ttl: int
    quiet: bool
    delta: int
    initial: int | None  # a counter that creates a missing key with this value


def _meta(command: Command, keys: list[bytes], value: bytes, request: _Request, seq: int
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


def _binary(command: Command, keys: list[bytes], value: bytes, request: _Request, seq: int
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
