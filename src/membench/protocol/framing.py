"""What the text and binary parsers share: their counters, and the bookkeeping of units that outlive a chunk.

A unit (a command or a reply) is a head (a text line, or a binary header with its extras and key) and maybe a
payload of known length (a data block, a binary value). Only heads are ever buffered, and they are small; a
payload is counted down as its bytes go by, so a 1 MiB value costs no memory and a hole inside it costs nothing
but its length. A hole anywhere else breaks the framing: the parser drops the partial head and resynchronizes.

Accounting invariant, relied on by the tests: after `close()`, every byte given to `receive()` was counted
exactly once, in `bytes_parsed` (it belongs to an emitted Request or Response) or in `bytes_skipped`.
"""

from __future__ import annotations

from dataclasses import dataclass

from membench.protocol.events import ParserEvent, Protocol, Request, Response, Skipped


@dataclass(slots=True)
class ParserStats:
    bytes_parsed: int = 0  # seen bytes that belong to an emitted Request or Response
    bytes_skipped: int = 0  # seen bytes given up on (reported in Skipped events)
    bytes_missing: int = 0  # bytes never seen (holes), whether the parser kept sync across them or not
    # Of those, the bytes inside payloads of known length (and an END known to follow one): the units are whole,
    # as when eBPF's per-call copy limit cuts a big value.
    bytes_missing_in_values: int = 0
    resyncs: int = 0  # times sync was lost (a hole in a head, garbage) and searched for again
    errors: int = 0  # malformed units: garbage lines, over-long lines, implausible binary headers


class FramedParser:
    """State shared by the parsers of one direction of one connection: partial head, payload countdown, skips."""

    __slots__ = ("_pending", "_pending_seen", "_remaining", "_skip", "_skip_reason", "_synced", "_tail",
                 "_tail_ts", "protocol", "stats")

    def __init__(self, stats: ParserStats | None = None, synced: bool = True) -> None:
        self.stats = stats if stats is not None else ParserStats()
        self.protocol: Protocol | None = None
        self._synced = synced  # False: the next unit must be found by strict validation, not assumed
        self._tail = bytearray()  # the seen part of a head that continues in the next chunk
        self._tail_ts = 0  # timestamp of the chunk holding the first byte of `_tail`
        self._pending: Request | Response | None = None  # unit whose payload is still being counted down
        self._remaining = 0  # payload bytes of `_pending` still to come (seen or in holes)
        self._pending_seen = 0  # bytes of `_pending` seen so far (head and payload)
        self._skip = 0  # skipped bytes not yet reported in a Skipped event
        self._skip_reason = "resync"

    def receive_hole(self, length: int, timestamp_ns: int) -> list[ParserEvent]:
        """`length` bytes went by unseen: inside a payload they are just counted, elsewhere sync is lost."""
        events: list[ParserEvent] = []
        if length <= 0:
            return events
        self.stats.bytes_missing += length
        if self._remaining:
            self.stats.bytes_missing_in_values += min(length, self._remaining)
            if length < self._remaining:
                self._remaining -= length
                return events
            length -= self._remaining
            self._complete_pending(timestamp_ns, events)
            if not length:
                return events
        lost_seen = len(self._tail)
        self.stats.bytes_skipped += lost_seen
        self._tail.clear()
        if self._synced:
            self.stats.resyncs += 1
            self._synced = False
        events.append(Skipped(self._skip + lost_seen + length, "hole", timestamp_ns))
        self._skip = 0
        self._skip_reason = "resync"
        return events

    def close(self, timestamp_ns: int) -> list[ParserEvent]:
        """End of stream: a unit still incomplete is reported as skipped."""
        events: list[ParserEvent] = []
        self._flush_skip(timestamp_ns, events)
        partial = len(self._tail) + (self._pending_seen if self._remaining else 0)
        if partial:
            self.stats.bytes_skipped += partial
            events.append(Skipped(partial, "incomplete", timestamp_ns))
        self._tail.clear()
        self._pending = None
        self._remaining = 0
        self._pending_seen = 0
        return events

    def _continue_payload(self, data: bytes, timestamp_ns: int, events: list[ParserEvent]) -> int:
        """Count the start of `data` against the pending payload; returns how many bytes it took."""
        take = min(self._remaining, len(data))
        self._remaining -= take
        self._pending_seen += take
        if not self._remaining:
            self._complete_pending(timestamp_ns, events)
        return take

    def _start_payload(self, unit: Request | Response, seen: int, remaining: int) -> None:
        self._pending = unit
        self._pending_seen = seen
        self._remaining = remaining

    def _complete_pending(self, timestamp_ns: int, events: list[ParserEvent]) -> None:
        unit = self._pending
        self._remaining = 0
        self._pending = None
        self.stats.bytes_parsed += self._pending_seen
        self._pending_seen = 0
        if unit is not None:
            events.append(unit._replace(end_ns=timestamp_ns))

    def _skip_seen(self, length: int, reason: str) -> None:
        """Seen bytes given up on; reported as one Skipped event per run, when sync is found again or at close."""
        if not self._skip:
            self._skip_reason = reason
        self._skip += length
        self.stats.bytes_skipped += length

    def _flush_skip(self, timestamp_ns: int, events: list[ParserEvent]) -> None:
        if self._skip:
            events.append(Skipped(self._skip, self._skip_reason, timestamp_ns))
            self._skip = 0

    def _lose_sync(self) -> None:
        if self._synced:
            self._synced = False
            self.stats.resyncs += 1
