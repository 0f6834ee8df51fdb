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
from membench.protocol.events import RETRIEVAL_COMMANDS, Command
from membench.replay.keys import MAX_KEY_LENGTH

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
_DEFAULT_WARM_SIZE = 1  # a key known to exist whose size the recording never saw (deleted or touched first)


def logical_command(recorded: str) -> Command | None:
    return _LOGICAL.get(recorded)


def effects(batch: pa.RecordBatch) -> pa.Array:
    """What each row did to the server, by command name: its recorded effect (schema 2: meta modes, mg T) where
    there is one, else its command."""
    command = batch.column("command").cast(pa.string())
    effect = batch.column("effect")
    if effect.null_count == len(effect):
        return command
    return pc.coalesce(effect.cast(pa.string()), command)


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
        protocol_index, protocol_names = dictionary_indices(batch.column("protocol"))
        firsts = np.unique(connections, return_index=True)[1]
        for row in np.sort(firsts).tolist():
            result.connection_protocols.setdefault(int(connections[row]), protocol_names[protocol_index[row]])

        command_index, command_names = dictionary_indices(effects(batch))
        status_index, status_names = dictionary_indices(batch.column("status"))
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
        hashes = filled(batch.column("key_hash"), 0)[rows]
        lengths = clamped_lengths(batch.column("key_length"))[rows]
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
                                   & (filled(batch.column("value_length"), 0)[rows] > 0))
            for row in sized[_first_of_each_pair(hashes[sized], lengths[sized])].tolist():
                pair = (int(hashes[row]), int(lengths[row]))
                if pair in pending_size:
                    result.warm[pair] = value_lengths[row]
                    pending_size.discard(pair)
    result.first_ns = first or 0
    result.last_ns = last or 0
    return result
