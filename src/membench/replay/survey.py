"""The survey: what must be known about the whole profile before a single request is planned.

One streaming pass over the profile's column batches, vectorized per batch, in the replay's parent process: the
short keys (their collisions are resolved globally), each connection's protocol, the keys to warm (present before
their first recorded operation), and the recorded outcomes per logical command, which the result sets beside the
replayed ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from membench.errors import MembenchError
from membench.profile.schema import SCHEMA, Status
from membench.protocol.events import RETRIEVAL_COMMANDS, STORAGE_COMMANDS, Command, Protocol
from membench.replay.keys import MAX_KEY_LENGTH
from membench.replay.seen import new_seen_keys

BatchSource = Callable[[], Iterator[pa.RecordBatch]]
"""Gives the profile's rows (schema.SCHEMA) from the start, each time it is called."""

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
_PROTOCOLS = frozenset(protocol.value for protocol in Protocol)
_KEYLESS = frozenset({Command.VERSION, Command.STATS, Command.FLUSH_ALL, Command.VERBOSITY, Command.NOOP})
# memcached stores no item over 1 GiB (its -I option stops there): a longer recorded value is a damaged row.
MAX_VALUE_LENGTH = 1 << 30
# Why a row cannot be replayed, by code (0: it can).
_NO_KEY, _VALUE_TOO_LONG = 1, 2
_REASONS = {_NO_KEY: "no key", _VALUE_TOO_LONG: "value over 1 GiB"}
_DEFAULT_WARM_SIZE = 1  # a key known to exist whose size the recording never saw (deleted or touched first)
_UNSIZED = -1  # a warm key's size until the end of the survey, while a later hit may still show it


def logical_command(recorded: str) -> Command | None:
    return _LOGICAL.get(recorded)


def effects(batch: pa.RecordBatch) -> pa.Array:
    """What each row did to the server, by command name: its recorded effect (schema 2: meta modes, mg T) where
    there is one, else its command."""
    command = batch.column("command")
    effect = batch.column("effect")
    if effect.null_count == len(effect):
        return command  # as recorded, still dictionary-encoded: no string per row to hash again
    return pc.coalesce(effect.cast(pa.string()), command.cast(pa.string()))


def replayed_effects(batch: pa.RecordBatch) -> pa.Array:
    """`effects`, where a row that cannot be sent as recorded is named for why (a recorder never writes one; a
    damaged or foreign profile may): "set (no key)", "set (value over 1 GiB)". No command is replayed under such a
    name, so the survey counts the row as not replayed and the plan skips it, both by the one rule."""
    names = effects(batch)
    index, command_names = dictionary_indices(names)
    logical = [_LOGICAL.get(name) for name in command_names]
    keyed = np.array([command is not None and command not in _KEYLESS for command in logical], dtype=bool)
    stores = np.array([command in STORAGE_COMMANDS for command in logical], dtype=bool)
    reason = np.zeros(len(index), dtype=np.intp)
    reason[keyed[index] & np.asarray(batch.column("key_hash").is_null())] = _NO_KEY
    reason[stores[index] & (filled(batch.column("value_length"), 0) > MAX_VALUE_LENGTH)] = _VALUE_TOO_LONG
    if not reason.any():
        return names
    renamed = [f"{name} ({_REASONS[code]})" if code else name
               for name, code in zip(np.array(command_names, dtype=object)[index].tolist(), reason.tolist(),
                                     strict=True)]
    return pa.array(renamed, pa.string())


@dataclass
class WarmKeys:
    """The keys present before their first operation, and the value size to store for each: arrays, since a
    profile may hold tens of millions of them."""

    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.hashes)


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
    warm: WarmKeys = field(default_factory=WarmKeys)
    requests: int = 0


def dictionary_indices(column: pa.Array) -> tuple[np.ndarray, list[str]]:
    """A dictionary column as (row -> entry index, entry names)."""
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    return column.indices.to_numpy(zero_copy_only=False).astype(np.intp), column.dictionary.to_pylist()


def filled(column: pa.Array, fill: int) -> np.ndarray:
    return column.fill_null(fill).to_numpy(zero_copy_only=False)


def clamped_lengths(column: pa.Array) -> np.ndarray:
    """clamp_length over a column: memcached keys have 1 to 250 bytes."""
    return np.clip(filled(column, 0).astype(np.int64), 1, MAX_KEY_LENGTH)


def _first_of_each_pair(hashes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct (hash, length) pair (lexsort is stable)."""
    order = np.lexsort((lengths, hashes))
    ordered_hashes, ordered_lengths = hashes[order], lengths[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (ordered_hashes[1:] != ordered_hashes[:-1]) | (ordered_lengths[1:] != ordered_lengths[:-1])
    return order[starts]


def _pairs(hashes: np.ndarray, lengths: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(hashes.tolist(), lengths.tolist(), strict=True))


@dataclass
class _Outcomes:
    """One batch's rows by logical command and status, as indices into its names."""

    logical: list[Command | None]  # by command index: the command replayed for it, None if not replayed
    command_index: np.ndarray
    status_index: np.ndarray
    status_names: list[str]


class _Surveyor:
    """The survey's pass, a batch at a time; what it must remember between batches is kept here."""

    def __init__(self) -> None:
        self.result = Survey()
        self._seen = new_seen_keys()
        self._warm: list[WarmKeys] = []  # a batch's warm keys each
        self._unsized: set[tuple[int, int]] = set()  # warm keys whose size no hit has shown yet
        self._sizes_shown: dict[tuple[int, int], int] = {}  # warm keys first met unsized, and the size a hit showed
        self._last_request: tuple[int, int] | None = None
        self._unreplayed_request: str | None = None
        self._first: int | None = None
        self._last: int | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.schema.names != SCHEMA.names:
            raise MembenchError("the profile's columns are not those of a membench profile")
        if not batch.num_rows:
            return
        self.result.rows += batch.num_rows
        self._span(batch)
        new_request = self._requests_and_protocols(batch)
        outcomes = self._outcomes(batch, new_request)
        self._keys(batch, outcomes)

    def finish(self) -> Survey:
        self.result.first_ns = self._first or 0
        self.result.last_ns = self._last or 0
        if self._warm:
            warm = WarmKeys(hashes=np.concatenate([part.hashes for part in self._warm]),
                            lengths=np.concatenate([part.lengths for part in self._warm]),
                            sizes=np.concatenate([part.sizes for part in self._warm]))
            unsized = np.flatnonzero(warm.sizes == _UNSIZED)
            warm.sizes[unsized] = [self._sizes_shown.get(pair, _DEFAULT_WARM_SIZE)
                                   for pair in _pairs(warm.hashes[unsized], warm.lengths[unsized])]
            self.result.warm = warm
        return self.result

    def _span(self, batch: pa.RecordBatch) -> None:
        timestamps = batch.column("timestamp_ns").to_numpy()
        low, high = int(timestamps.min()), int(timestamps.max())
        self._first = low if self._first is None else min(self._first, low)
        self._last = high if self._last is None else max(self._last, high)

    def _requests_and_protocols(self, batch: pa.RecordBatch) -> np.ndarray:
        """Counts the requests and notes each connection's protocol; gives whether each row starts a request."""
        connections = batch.column("connection").to_numpy().astype(np.int64)
        requests = batch.column("batch").to_numpy()
        new_request = np.ones(len(connections), dtype=bool)
        new_request[1:] = (connections[1:] != connections[:-1]) | (requests[1:] != requests[:-1])
        new_request[0] = self._last_request != (int(connections[0]), int(requests[0]))
        self.result.requests += int(new_request.sum())
        self._last_request = (int(connections[-1]), int(requests[-1]))
        protocol_index, protocol_names = dictionary_indices(batch.column("protocol"))
        unknown = sorted({protocol_names[index] for index in np.unique(protocol_index).tolist()} - _PROTOCOLS)
        if unknown:
            raise MembenchError(f"the profile names a protocol membench does not know: {unknown[0]!r}")
        firsts = np.unique(connections, return_index=True)[1]
        for row in np.sort(firsts).tolist():
            self.result.connection_protocols.setdefault(int(connections[row]), protocol_names[protocol_index[row]])
        return new_request

    def _outcomes(self, batch: pa.RecordBatch, new_request: np.ndarray) -> _Outcomes:
        """Counts the recorded outcomes of the replayed commands, and the rows of those not replayed."""
        command_index, command_names = self._as_requests_are_sent(*dictionary_indices(replayed_effects(batch)),
                                                                  new_request)
        status_index, status_names = dictionary_indices(batch.column("status"))
        logical = [_LOGICAL.get(name) for name in command_names]
        pair_counts = np.bincount(command_index * len(status_names) + status_index,
                                  minlength=len(command_names) * len(status_names))
        for code in np.flatnonzero(pair_counts).tolist():
            command, status = divmod(code, len(status_names))
            count = int(pair_counts[code])
            replayed = logical[command]
            if replayed is None:
                self.result.skipped[command_names[command]] += count
            else:
                self.result.recorded.setdefault(replayed.value, Counter())[status_names[status]] += count
        return _Outcomes(logical=logical, command_index=command_index, status_index=status_index,
                         status_names=status_names)

    def _as_requests_are_sent(self, command_index: np.ndarray, command_names: list[str], new_request: np.ndarray
                              ) -> tuple[np.ndarray, list[str]]:
        """The plan sends a request as its first row's command says: a request whose first row is not replayed
        is not replayed whole (a multi-key get whose first key was lost), and its rows count under that name."""
        replayed = np.array([name in _LOGICAL for name in command_names], dtype=bool)
        first_row = np.maximum.accumulate(np.where(new_request, np.arange(len(command_index)), -1))
        carried = self._unreplayed_request  # the name of the open request of the last batch, if not replayed
        starts = np.flatnonzero(new_request)
        if len(starts):
            last_first = command_index[starts[-1]]
            self._unreplayed_request = None if replayed[last_first] else command_names[last_first]
        first_command = command_index[np.maximum(first_row, 0)]
        inherits = (first_row >= 0) & ~replayed[first_command]
        if not inherits.any() and (carried is None or first_row[0] >= 0):
            return command_index, command_names
        command_index = np.where(inherits, first_command, command_index)
        if carried is not None and first_row[0] < 0:
            if carried not in command_names:
                command_names = [*command_names, carried]
            command_index = np.where(first_row < 0, command_names.index(carried), command_index)
        return command_index, command_names

    def _keys(self, batch: pa.RecordBatch, outcomes: _Outcomes) -> None:
        """The short keys, and the keys present before their first operation (to warm) with their sizes."""
        logical, command_index, status_index = outcomes.logical, outcomes.command_index, outcomes.status_index
        replayed = np.array([command is not None for command in logical])[command_index]
        rows = np.flatnonzero(replayed & ~np.asarray(batch.column("key_hash").is_null()))
        if not len(rows):
            return
        hashes = filled(batch.column("key_hash"), 0)[rows]
        lengths = clamped_lengths(batch.column("key_length"))[rows]
        short = lengths < 10
        if short.any():
            self.result.short_pairs.update(zip(hashes[short].tolist(), lengths[short].tolist(), strict=True))
        present = np.array([[status in _PRESENT.get(command, ()) if command else False
                             for status in outcomes.status_names] for command in logical],
                           dtype=bool)[command_index[rows], status_index[rows]]
        # A counter that may have created its key answers the same whether it did or not: the recording does not
        # show the key was there before it, and the replay will create it as the recording may have.
        present &= np.asarray(batch.column("initial").is_null())[rows]
        retrieval = np.array([command in RETRIEVALS for command in logical], dtype=bool)[command_index[rows]]
        value_lengths = batch.column("value_length").take(pa.array(rows))
        sizes = filled(value_lengths, 0).astype(np.int64)
        warm = self._seen.first_met(hashes, lengths) & present & (sizes <= MAX_VALUE_LENGTH)  # else no server holds it
        sized = retrieval & ~np.asarray(value_lengths.is_null())
        if warm.any():
            self._warm.append(WarmKeys(hashes=hashes[warm], lengths=lengths[warm],
                                       sizes=np.where(sized, sizes, _UNSIZED)[warm]))
            self._unsized.update(_pairs(hashes[warm & ~sized], lengths[warm & ~sized]))
        if self._unsized:
            # A later hit tells the size of a key first met without one (never the first occurrence itself:
            # an unsized key's first row was no retrieval with a size).
            hit = outcomes.status_names.index(Status.HIT) if Status.HIT in outcomes.status_names else -1
            shown = np.flatnonzero(retrieval & (status_index[rows] == hit) & (sizes > 0))
            shown = shown[_first_of_each_pair(hashes[shown], lengths[shown])]
            for pair, size in zip(_pairs(hashes[shown], lengths[shown]), sizes[shown].tolist(), strict=True):
                if pair in self._unsized:
                    if size <= MAX_VALUE_LENGTH:
                        self._sizes_shown[pair] = size
                    self._unsized.discard(pair)


def survey(source: BatchSource) -> Survey:
    surveyor = _Surveyor()
    for batch in source():
        surveyor.add(batch)
    return surveyor.finish()
