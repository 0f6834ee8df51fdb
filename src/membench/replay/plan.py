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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from membench.errors import MembenchError
from membench.profile.schema import SCHEMA
from membench.protocol.events import Command, Protocol
from membench.replay.ketama import Continuum
from membench.replay.keys import KeySynthesizer
from membench.replay.options import ReplayOptions, Timing
from membench.replay.pass_plan import (
    ConnectionMap,
    PassPlanner,
    PlanContext,
    SliceNames,
    SliceRows,
    new_pass_plan,
)
from membench.replay.requests import Group, RequestEncoder
from membench.replay.survey import (
    BatchSource,
    Survey,
    clamped_lengths,
    dictionary_indices,
    filled,
    logical_command,
    replayed_effects,
)

SLICE_ROWS = 1024  # rows planned at a time: a few milliseconds of the event loop's time at most
SLICE_VALUE_BYTES = 16 << 20  # or fewer, as many as carry this many value bytes (a planned request holds its value)


@dataclass(frozen=True)
class Stream:
    """One socket: replay connection `connection` to server `target`; `binary` is the protocol it speaks."""

    connection: int
    target: int
    binary: bool


class _Codes:
    """Stable codes for dictionary names across batches (each batch has a dictionary of its own)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def of(self, column: pa.Array) -> np.ndarray:
        """The codes of the column's rows; only names some row uses get one (a dictionary may hold others)."""
        entries, names = dictionary_indices(column)
        table = np.full(len(names), -1, dtype=np.intp)
        for used in np.flatnonzero(np.bincount(entries, minlength=len(names))).tolist():
            table[used] = self._code(names[used])
        return table[entries] if len(table) else entries

    def _code(self, name: str) -> int:
        code = self._index.get(name)
        if code is None:
            code = self._index[name] = len(self.names)
            self.names.append(name)
        return code


class Planner:
    """Plans the streams of the replay connections one worker owns (`connection % workers == worker`)."""

    def __init__(self, survey: Survey, options: ReplayOptions, continuum: Continuum, keys: KeySynthesizer,
                 worker: int = 0, workers: int = 1) -> None:
        self._survey = survey
        self._options = options
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
        slots = {Command(name): slot for slot, name in enumerate(self.commands)}
        self.streams: list[Stream] = []
        stream_of: dict[tuple[int, int], int] = {}
        for connection, binary in sorted(self._replay_protocols().items()):
            if connection % workers != worker:
                continue
            for target in range(continuum.server_count):
                stream_of[connection, target] = len(self.streams)
                self.streams.append(Stream(connection, target, binary))
        self._context = PlanContext(
            first_ns=survey.first_ns, timing=options.timing, speed=options.speed, rate=options.rate,
            pipeline=options.pipeline, slots=slots, stream_of=stream_of,
            binaries=[stream.binary for stream in self.streams],
            encoder=RequestEncoder(uniques_needed=Command.CAS in slots), continuum=continuum,
            connections=ConnectionMap(recorded_index=self._recorded_index, recorded_count=self._recorded_count,
                                      replay_count=self._replay_count))

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

    def plan(self, source: BatchSource) -> Iterator[list[tuple[int, Sequence[Group]]]]:
        """One loop's plan, a slice at a time: (stream index, its next groups in order) for the streams that have
        some. A fresh call starts a fresh loop."""
        # Open-loop timings keep the recorded schedule; as fast as possible keeps the recorded order instead.
        ordered = self._options.timing is Timing.ASAP and self._options.key_order
        state = new_pass_plan(self._context, len(self.streams), ordered)
        carry: SliceRows | None = None
        for batch in source():
            # Converted once per batch: per slice, the dozen Arrow calls cost more than the slice's rows.
            converted = self._rows(batch)
            for offset, length in _slices(batch):
                rows = converted.window(offset, length)
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
                    yield self._plan_slice(rows, state)
        if carry is not None:
            yield self._plan_slice(carry, state)

    def _plan_slice(self, rows: SliceRows, state: PassPlanner) -> list[tuple[int, Sequence[Group]]]:
        keyed = np.flatnonzero(rows.keyed)
        keys: list[bytes | None]
        if len(keyed) == len(rows.keyed):
            keys = list(self._keys.keys(rows.key_hash, rows.key_length))
        else:
            keys = [None] * len(rows.request)
            for row, key in zip(keyed.tolist(), self._keys.keys(rows.key_hash[keyed], rows.key_length[keyed]),
                                strict=True):
                keys[row] = key
        forced = self._options.protocol
        names = SliceNames(commands=[logical_command(name) for name in self._commands.names],
                           protocols=[forced or Protocol(name) for name in self._protocols.names],
                           statuses=self._statuses.names)
        return state.plan(rows, keys, names)

    def _rows(self, batch: pa.RecordBatch) -> SliceRows:
        if batch.schema.names != SCHEMA.names:
            raise MembenchError("the profile's columns are not those of a membench profile")
        column = batch.column
        return SliceRows(
            timestamp_ns=column("timestamp_ns").to_numpy(),
            connection=column("connection").to_numpy().astype(np.int64),
            command=self._commands.of(replayed_effects(batch)),
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
            initial=_objects(column("initial")),
        )


def _objects(column: pa.Array) -> np.ndarray:
    """A uint64 column as Python ints and Nones (to_pylist builds a scalar per row first: 40 ns a row)."""
    out = np.full(len(column), None, dtype=object)
    if column.null_count < len(column):
        present = np.flatnonzero(~np.asarray(column.is_null()))
        out[present] = column.drop_null().to_numpy().tolist()
    return out


def _slices(batch: pa.RecordBatch) -> Iterator[tuple[int, int]]:
    """(offset, length) of the batch's slices: SLICE_ROWS rows, or fewer where their values would pass
    SLICE_VALUE_BYTES (at least one row each)."""
    carried = np.cumsum(filled(batch.column("value_length"), 0).astype(np.int64))
    offset = 0
    while offset < batch.num_rows:
        before = int(carried[offset - 1]) if offset else 0
        fitting = int(np.searchsorted(carried, before + SLICE_VALUE_BYTES, side="right")) - offset
        length = max(1, min(SLICE_ROWS, fitting))
        yield offset, length
        offset += length
