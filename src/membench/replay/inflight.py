"""What a replay stream has in flight, and what each reply says of it: replay's counterpart of record's pairing.

Sans-IO: the link hands over the groups it sends and the bytes of the replies as they come; this module parses
them with the project's one response parser, attributes each reply to the request it answers, counts the outcome
by the same rules recording uses, and keeps the latencies. memcached answers a connection's requests in order, so
replies are matched first in, first out: a text get takes VALUEs up to its END, a group of several units takes
that many replies, quiet requests are settled by their own reply (matched by opaque) or by silence before a later
reply or the closing noop. Replies count up to the first byte that makes no sense; after it nothing can be
attributed, and `receive` says so (the link then drops the connection).

The tallies stay here until `collect` moves them into the process's meter (once a second, and at the end): the
compiled twin (record/_core_replay.pxi, selected by `new_inflight`) keeps them in C arrays, and both twins have
one interface, checked equal by tests/replay/test_inflight_twin.py. This class is the readable specification.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol as TypingProtocol

from membench import extensions
from membench.protocol.events import Reply, Response, Skipped
from membench.protocol.stream import ResponseStreamParser
from membench.replay.requests import (
    CAS_NONE,
    EXPECT_NONE,
    EXPECT_NOOP,
    EXPECT_QUIET,
    EXPECT_UNITS,
    INTERNAL_SLOT,
    Group,
)
from membench.replay.stats import HIT, MISS, OK, STATUS_NAMES, Meter


class Matcher(TypingProtocol):
    """What a link needs of its in-flight matcher (this module's InFlight, or its compiled twin)."""

    waiting: int
    answered: int

    def sent(self, group: Group, now: int, due: int) -> None: ...
    def admit(self, chunk: Sequence[Group], index: int, budget: int, now: int, depth: int, streams: Sequence[Matcher],
              payloads: list[bytes]) -> int: ...
    def receive(self, data: bytes, now: int) -> bool: ...
    def answer(self, number: int) -> None: ...
    def abandon(self, status: int) -> None: ...
    def drop(self) -> None: ...
    def reconnected(self) -> None: ...
    def pending(self) -> int: ...
    def oldest_sent_ns(self) -> int: ...
    def collect(self, meter: Meter) -> None: ...


# The compiled matcher reads a Group's fields by position.
assert Group._fields[:11] == ("payload", "slot", "rows", "expect", "units", "at_ns", "outstanding", "seq", "number",
                              "after", "cas")


def new_inflight(tables: list[dict[Reply, int]], suppressed: list[int], timed: bool,
                 uniques: dict[bytes, int] | None) -> Matcher:
    """The compiled matcher where it is built (and not switched off), else the specification. It admits from the
    compiled planner's GroupBlocks, not from the specification's lists: the two are taken together."""
    core = extensions.compiled("membench.record._core")
    if core is not None and extensions.compiled("membench.replay._pass_plan") is not None:
        matcher: Matcher = core.ReplyMatcher(tables, suppressed, timed, uniques)
        return matcher
    return InFlight(tables, suppressed, timed, uniques)


@dataclass(slots=True)
class Entry:
    """One group in flight."""

    group: Group
    sent_ns: int
    due_ns: int
    replies: int = 0  # replies (or values) counted so far


@dataclass
class Tally:
    """What one stream measured since its last collect, by command slot."""

    slots: int
    counts: list[list[int]] = field(init=False)
    requests: list[int] = field(init=False)
    latencies: list[list[int]] = field(init=False)  # µs from the actual send
    intended: list[list[int]] = field(init=False)  # µs from the intended send (open loop)
    unexpected_replies: int = 0

    def __post_init__(self) -> None:
        self.counts = [[0] * len(STATUS_NAMES) for _ in range(self.slots)]
        self.requests = [0] * self.slots
        self.latencies = [[] for _ in range(self.slots)]
        self.intended = [[] for _ in range(self.slots)]


class InFlight:
    """The requests one stream sent and has not seen answered, oldest first."""

    def __init__(self, tables: list[dict[Reply, int]], suppressed: list[int], timed: bool,
                 uniques: dict[bytes, int] | None) -> None:
        self._tables = tables
        self._suppressed = suppressed
        self._timed = timed
        self._uniques = uniques  # key -> the CAS unique its last reply showed, kept for a later cas
        self._parser = ResponseStreamParser()
        self._tally = Tally(len(tables))
        self._entries: deque[Entry] = deque()
        self.waiting = 0  # entries that will get a reply of their own (not quiet)
        self.answered = INTERNAL_SLOT  # number of the latest group answered or written off: they end in order

    def sent(self, group: Group, now: int, due: int) -> None:
        self._entries.append(Entry(group=group, sent_ns=now, due_ns=due))
        if group.expect != EXPECT_QUIET:
            self.waiting += 1

    def admit(self, chunk: Sequence[Group], index: int, budget: int, now: int, depth: int, streams: Sequence[Matcher],
              payloads: list[bytes]) -> int:
        """Puts in flight the groups of `chunk` from `index` on that may go at once (their payloads onto
        `payloads`), at most `budget`: while fewer requests wait for a reply than the depth (`depth`, or the
        group's recorded depth when 0) and every request it waits for on another stream (`streams`, by index) is
        answered. Stops at the first group that may not go, or that its link handles itself (a cas, whose unique
        the link fills in; a noreply request, which it counts); returns the index it stopped at. For an
        as-fast-as-possible replay: an open-loop link sends each group at its own time instead. The compiled twin
        admits from the compiled planner's GroupBlock, and puts the admitted payloads out as one piece."""
        while budget and index < len(chunk):
            group = chunk[index]
            if group.cas != CAS_NONE or group.expect == EXPECT_NONE:
                break
            if self.waiting >= (depth or group.outstanding + 1):
                break
            if any(streams[stream].answered < number for stream, number in group.after):
                break
            payloads.append(group.payload)
            self.sent(group, now, now)
            index += 1
            budget -= 1
        return index

    def receive(self, data: bytes, now: int) -> bool:
        """The bytes of one read; False once the stream made no sense (nothing after that point is counted)."""
        parser = self._parser
        sane = not parser.stats.bytes_skipped
        for event in parser.receive(data, now):
            if not sane or isinstance(event, Skipped):
                break
            self._on_reply(event, now)
        # The parser reports skipped bytes as an event only once it finds its way again, which garbage may never
        # let it do: any byte skipped means the server's bytes made no sense.
        if parser.stats.bytes_skipped:
            self._tally.unexpected_replies += 1
            return False
        return True

    def answer(self, number: int) -> None:
        """Group `number` is done with (answered, or ended without a reply)."""
        if number > self.answered:
            self.answered = number

    def abandon(self, status: int) -> None:
        """The connection is gone: everything in flight ends with `status` (lost, timeout)."""
        counts = self._tally.counts
        for entry in self._entries:
            group = entry.group
            if group.slot >= 0:
                answered = entry.replies if group.expect in (EXPECT_UNITS, EXPECT_NOOP) else 0
                counts[group.slot][status] += group.rows - answered
            self.answer(group.number)
        self._entries.clear()
        self.waiting = 0

    def drop(self) -> None:
        """The replay stops: what is in flight has no outcome and is not counted."""
        for entry in self._entries:
            self.answer(entry.group.number)
        self._entries.clear()
        self.waiting = 0

    def reconnected(self) -> None:
        """A new connection: its replies start a new stream."""
        self._parser = ResponseStreamParser()

    def pending(self) -> int:
        return len(self._entries)

    def oldest_sent_ns(self) -> int:
        return self._entries[0].sent_ns

    def collect(self, meter: Meter) -> None:
        """Move this stream's tallies into `meter`."""
        tally = self._tally
        for slot in range(tally.slots):
            for status, count in enumerate(tally.counts[slot]):
                meter.counts[slot][status] += count
            meter.requests[slot] += tally.requests[slot]
            for chunks, values in ((meter.latencies[slot], tally.latencies[slot]),
                                   (meter.intended[slot], tally.intended[slot])):
                if values:
                    chunks.append(values)
        meter.unexpected_replies += tally.unexpected_replies
        self._tally = Tally(tally.slots)

    def _record(self, entry: Entry, now: int) -> None:
        slot = entry.group.slot
        if slot >= 0:
            self._tally.latencies[slot].append((now - entry.sent_ns) // 1000)
            self._tally.requests[slot] += 1
            if self._timed:
                self._tally.intended[slot].append((now - entry.due_ns) // 1000)

    def _remember_unique(self, response: Response) -> None:
        if response.cas is not None and response.key is not None and self._uniques is not None:
            self._uniques[response.key] = response.cas

    def _on_reply(self, response: Response, now: int) -> None:
        """A reply to whatever is first in flight; quiet requests it passes over were answered by silence."""
        self._remember_unique(response)
        entries = self._entries
        reply = response.reply
        while entries:
            entry = entries[0]
            group = entry.group
            if group.expect == EXPECT_QUIET:
                entries.popleft()
                self.answer(group.number)
                own = _opaque_number(response.opaque) == group.seq
                status = self._tables[group.slot][reply] if own else self._suppressed[group.slot]
                self._tally.counts[group.slot][status] += group.rows
                self._record(entry, now)
                if own:
                    return
                continue
            if group.expect == EXPECT_UNITS:
                self._on_unit(entry, reply, now)
            elif group.expect == EXPECT_NOOP:
                self._on_quiet_unit(entry, reply, now)
            elif reply is Reply.VALUE:
                entry.replies += 1
            else:
                self._on_end(entry, reply, now)
            return
        self._tally.unexpected_replies += 1

    def _on_unit(self, entry: Entry, reply: Reply, now: int) -> None:
        """One of the replies a group of `units` replies waits for."""
        group = entry.group
        if group.slot >= 0:
            self._tally.counts[group.slot][self._tables[group.slot][reply]] += 1 if group.units > 1 else group.rows
        entry.replies += 1
        if entry.replies >= group.units:
            self._close(entry, now)

    def _on_quiet_unit(self, entry: Entry, reply: Reply, now: int) -> None:
        """A reply to quiet keys closed by a noop: a key's own reply, or the noop that ends them."""
        group = entry.group
        counts = self._tally.counts[group.slot]
        if reply is Reply.NOOP:
            counts[self._suppressed[group.slot]] += group.rows - entry.replies
            self._close(entry, now)
        else:
            counts[self._tables[group.slot][reply]] += 1
            entry.replies += 1

    def _on_end(self, entry: Entry, reply: Reply, now: int) -> None:
        """A reply other than a value to a text get or stats: a STAT line, or the reply that closes it."""
        if reply is Reply.STAT:
            return
        group = entry.group
        counts = self._tally.counts[group.slot]
        if reply is not Reply.END:
            counts[self._tables[group.slot][reply]] += group.rows
        elif group.units:
            counts[OK] += group.rows
        else:
            counts[HIT] += entry.replies
            counts[MISS] += group.rows - entry.replies
        self._close(entry, now)

    def _close(self, entry: Entry, now: int) -> None:
        """The oldest entry, which had a reply of its own coming, is answered."""
        self._entries.popleft()
        self.waiting -= 1
        self._record(entry, now)
        self.answer(entry.group.number)


def _opaque_number(opaque: int | bytes | None) -> int | None:
    """A reply's opaque as the number replay sent (binary: the header's; meta: the O token's digits)."""
    if isinstance(opaque, int) or opaque is None:
        return opaque
    return int(opaque) if opaque.isdigit() else None
