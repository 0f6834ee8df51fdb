"""`membench merge`: the profiles of a fleet, recorded node by node with one salt, as one profile.

Key hashes only join across profiles hashed with the same salt, so the salt fingerprints must match. Each source's
connections and request numbers are shifted past the previous sources', so no two nodes share a connection or a
batch; the metadata lists which connection range came from which node (`extra["nodes"]`). Timestamps are epoch
nanoseconds, one axis for all nodes: rows are merged in time order, a window at a time, so a profile of any size
merges in bounded memory. Health counters are summed.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from membench.errors import MembenchError
from membench.profile.metadata import ProfileMetadata, ProfileWarning
from membench.profile.reader import ProfileReader
from membench.profile.schema import UINT32_MAX, UINT64_MAX
from membench.profile.writer import ProfileWriter


@dataclass
class _Source:
    reader: ProfileReader
    connection_offset: int
    batch_offset: int
    connections: int


@dataclass
class MergeSummary:
    operations: int
    nodes: int
    connections: int


def merge_profiles(paths: Sequence[Path], output: Path, overwrite: bool = False) -> MergeSummary:
    if len(paths) < 2:
        raise MembenchError("merge needs at least two profiles")
    if len({path.resolve() for path in paths}) < len(paths):
        raise MembenchError("a profile is named twice: its operations would be merged twice")
    for path in paths:
        if output.resolve() == path.resolve():
            raise MembenchError(f"-o {output} is one of the profiles being merged: it would be overwritten while read")
    readers = [ProfileReader(path) for path in paths]
    fingerprint = _common_fingerprint(readers)
    sources = _sources(readers)
    metadata = ProfileMetadata(
        source="merge:" + ",".join(str(reader.path) for reader in readers),
        ports=sorted({port for reader in readers for port in reader.metadata.ports}),
        salt_fingerprint=fingerprint, salt_kdf=readers[0].metadata.salt_kdf,
        extra={"nodes": [_node(source) for source in sources]},
    )
    for reader in readers:
        if not reader.metadata.complete:
            warnings.warn(f"{reader.path}: its recording did not end cleanly; merged as it is", ProfileWarning,
                          stacklevel=2)
    _write_whole(output, metadata, overwrite, sources, readers)
    return MergeSummary(operations=sum(reader.num_rows for reader in readers), nodes=len(readers),
                        connections=sum(source.connections for source in sources))


def _write_whole(output: Path, metadata: ProfileMetadata, overwrite: bool, sources: list[_Source],
                 readers: list[ProfileReader]) -> None:
    """Writes the merged profile, or nothing: a merge that fails part-way (rows that could not be read, a full
    disk, a signal) removes what it wrote rather than leave a profile that looks like a smaller merge."""
    created = not output.exists()
    try:
        writer = ProfileWriter.for_input_file(output, metadata, overwrite=overwrite)
    except MembenchError as error:
        # A path that was there (a directory of other files, say) was refused untouched: only a new one is ours.
        if created:
            shutil.rmtree(output, ignore_errors=True)
        raise MembenchError(f"nothing merged: {error}") from None
    try:
        with writer:
            for table in _in_time_order(sources):
                writer.write_batch(table)
            unread = [f"{reader.path}: {problem}" for reader in readers for problem in reader.read_problems]
            if unread:
                raise MembenchError(f"rows of the profiles could not be read ({unread[0]})")
            writer.set_health(_summed_health(readers))
    except BaseException as error:
        _remove_written(output, created)
        if isinstance(error, MembenchError):
            raise MembenchError(f"nothing merged: {error}") from None
        raise


def _remove_written(output: Path, created: bool) -> None:
    """Undo a merge the writer had accepted `output` for: it held no files then but a profile's, which the writer
    removed, so all it holds now is this merge's. A directory that was there (empty) stays."""
    if created:
        shutil.rmtree(output, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        for entry in list(output.iterdir()):
            # One file that cannot go (gone already, say) does not keep the others.
            with contextlib.suppress(OSError):
                entry.unlink()


def _common_fingerprint(readers: list[ProfileReader]) -> str:
    unsalted = [str(reader.path) for reader in readers if reader.metadata.salt_fingerprint is None]
    if unsalted:
        raise MembenchError(f"{', '.join(unsalted)} records no salt fingerprint: whether its keys join the others' "
                            "cannot be told; record every node with the same --salt-file")
    fingerprints = {reader.metadata.salt_fingerprint for reader in readers}
    if len(fingerprints) != 1:
        named = ", ".join(f"{reader.path} {reader.metadata.salt_fingerprint}" for reader in readers)
        raise MembenchError(f"the profiles were hashed with different salts, or some with the key hash of schema "
                            f"versions before 3 (BLAKE2b) ({named}): their keys cannot be joined; record every node "
                            "with the same --salt-file and the same membench")
    return fingerprints.pop()


def _sources(readers: list[ProfileReader]) -> list[_Source]:
    """Each reader with the shifts that put its connections and request numbers after the previous ones'."""
    sources = []
    connection_offset = batch_offset = 0
    for reader in readers:
        connections = batches = 0
        for batch in reader.batches(["connection", "batch"]):
            if batch.num_rows:
                connections = max(connections, pc.max(batch["connection"]).as_py() + 1)
                batches = max(batches, pc.max(batch["batch"]).as_py())
        sources.append(_Source(reader, connection_offset, batch_offset, connections))
        connection_offset += connections
        batch_offset += batches
        # Renumbered after the previous profiles', the numbers must still fit their columns (uint32, uint64).
        if connection_offset > UINT32_MAX + 1 or batch_offset > UINT64_MAX:
            raise MembenchError(f"{reader.path}: its connection or request numbers, after those of the profiles "
                                "before it, pass what a profile can hold: merge fewer profiles at once")
    return sources


def _node(source: _Source) -> dict[str, Any]:
    metadata = source.reader.metadata
    return {"profile": str(source.reader.path), "source": metadata.source, "created": metadata.created,
            "operations": source.reader.num_rows,
            "connections": [source.connection_offset, source.connection_offset + source.connections]}


def _shifted(source: _Source) -> Iterator[pa.Table]:
    for batch in source.reader.batches():
        table = pa.Table.from_batches([batch])
        table = table.set_column(table.schema.get_field_index("connection"), "connection",
                                 pc.add(table["connection"], pa.scalar(source.connection_offset, pa.uint32())))
        table = table.set_column(table.schema.get_field_index("batch"), "batch",
                                 pc.add(table["batch"], pa.scalar(source.batch_offset, pa.uint64())))
        yield table


def _in_time_order(sources: list[_Source]) -> Iterator[pa.Table]:
    """The rows of all sources in timestamp order, a window at a time: the rows up to the earliest of the latest
    timestamps the sources have given so far, none of which a later batch of a source can precede (rows of one
    profile are close to time order; a straggler is merged with the window it arrives in)."""
    streams = [_shifted(source) for source in sources]
    held: list[pa.Table | None] = [None] * len(sources)
    live = list(range(len(sources)))
    while live or any(table is not None and table.num_rows for table in held):
        for index in list(live):
            if held[index] is None or held[index].num_rows == 0:
                table = next(streams[index], None)
                if table is None:
                    live.remove(index)
                else:
                    held[index] = table if held[index] is None else pa.concat_tables([held[index], table])
        waiting = [held[index] for index in live if held[index] is not None and held[index].num_rows]
        watermark = min((pc.max(table["timestamp_ns"]).as_py() for table in waiting), default=None)
        ready = []
        for index, table in enumerate(held):
            if table is None or table.num_rows == 0:
                continue
            if watermark is None:
                ready.append(table)
                held[index] = None
                continue
            early = pc.less_equal(table["timestamp_ns"], watermark)
            ready.append(table.filter(early))
            held[index] = table.filter(pc.invert(early))
        if not ready:
            continue
        merged = pa.concat_tables(ready)
        if merged.num_rows:
            yield merged.take(pc.sort_indices(merged, sort_keys=[("timestamp_ns", "ascending")]))


def _summed_health(readers: list[ProfileReader]) -> dict[str, dict[str, int]]:
    total: dict[str, dict[str, int]] = {}
    for reader in readers:
        for section, counters in reader.metadata.health.items():
            into = total.setdefault(section, {})
            for name, value in counters.items():
                into[name] = into.get(name, 0) + value
    return total
