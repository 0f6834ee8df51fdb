"""What a replay stream has in flight, and what each reply says of it: replay's counterpart of record's pairing.

Sans-IO: the link hands over the groups it sent and the parser's events of the replies, in order; this module
attributes each reply to the request it answers, counts the outcome by the same rules recording uses, and records
the latency. memcached answers a connection's requests in order, so replies are matched first in, first out:
a text get takes VALUEs up to its END, a group of several units takes that many replies, quiet requests are
settled by their own reply (matched by opaque) or by silence before a later reply or the closing noop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, cast

from membench.protocol.events import ParserEvent, Reply, Response
from membench.replay.plan import Group
from membench.replay.requests import EXPECT_END, EXPECT_NOOP, EXPECT_QUIET, EXPECT_UNITS
from membench.replay.stats import HIT, MISS, OK, Meter

_VALUE = Reply.VALUE
_END = Reply.END
_STAT = Reply.STAT
_NOOP = Reply.NOOP

Answered = Callable[[int], None]  # told the number of each group once it is done with


class InFlight:
    """The requests one stream sent and has not seen answered, oldest first."""

    def __init__(self, meter: Meter, tables: list[dict[Reply, int]], suppressed: list[int], timed: bool,
                 uniques: dict[bytes, int] | None, answered: Answered) -> None:
        self._meter = meter
        self._counts = meter.counts
        self._requests = meter.requests
        self._latencies = meter.latencies
        self._intended = meter.intended
        self._tables = tables
        self._suppressed = suppressed
        self._timed = timed
        self._uniques = uniques  # key -> the CAS unique its last reply showed, kept for a later cas
        self._answered = answered
        self.entries: deque[list[Any]] = deque()  # [group, sent ns, due ns, replies so far]
        self.waiting = 0  # entries that will get a reply of their own (not quiet)

    def sent(self, group: Group, now: int, due: int) -> None:
        self.entries.append([group, now, due, 0])
        if group.expect != EXPECT_QUIET:
            self.waiting += 1

    def receive(self, events: list[ParserEvent], now: int) -> None:
        """The replies of one read, in order."""
        entries = self.entries
        for event in events:
            if entries:
                entry = entries[0]
                if entry[0].expect == EXPECT_END:
                    # The text get family, most replies of most replays: its values are counted without a call.
                    reply = event.reply
                    if reply is _VALUE:
                        entry[3] += 1
                        if event.cas is not None and self._uniques is not None:
                            self._uniques[event.key] = event.cas
                    else:
                        self._on_end(entry, reply, now)
                    continue
            self._on_reply(cast(Response, event), now)

    def abandon(self, status: int) -> None:
        """The connection is gone: everything in flight ends with `status` (lost, timeout)."""
        counts = self._counts
        for entry in self.entries:
            group = entry[0]
            if group.slot >= 0:
                answered = entry[3] if group.expect in (EXPECT_UNITS, EXPECT_NOOP) else 0
                counts[group.slot][status] += group.rows - answered
            self._answered(group.number)
        self.entries.clear()
        self.waiting = 0

    def drop(self) -> None:
        """The replay stops: what is in flight has no outcome and is not counted."""
        for entry in self.entries:
            self._answered(entry[0].number)
        self.entries.clear()
        self.waiting = 0

    def _record(self, entry: list[Any], now: int) -> None:
        slot = entry[0].slot
        if slot >= 0:
            self._latencies[slot].append((now - entry[1]) // 1000)
            self._requests[slot] += 1
            if self._timed:
                self._intended[slot].append((now - entry[2]) // 1000)

    def _on_reply(self, response: Response, now: int) -> None:
        """A reply to whatever is first in flight; quiet requests it passes over were answered by silence."""
        entries = self.entries
        reply = response.reply
        if response.cas is not None and response.key is not None and self._uniques is not None:
            self._uniques[response.key] = response.cas
        while entries:
            entry = entries[0]
            group: Group = entry[0]
            expect = group.expect
            slot = group.slot
            if expect == EXPECT_QUIET:
                entries.popleft()
                self._answered(group.number)
                opaque = response.opaque
                if opaque is not None and int(opaque) == group.seq:
                    self._counts[slot][self._tables[slot][reply]] += group.rows
                    self._record(entry, now)
                    return
                self._counts[slot][self._suppressed[slot]] += group.rows
                self._record(entry, now)
                continue
            if expect == EXPECT_UNITS:
                if slot >= 0:
                    self._counts[slot][self._tables[slot][reply]] += 1 if group.units > 1 else group.rows
                entry[3] += 1
                if entry[3] >= group.units:
                    self._close(entry, now)
                return
            if expect == EXPECT_NOOP:
                if reply is _NOOP:
                    self._counts[slot][self._suppressed[slot]] += group.rows - entry[3]
                    self._close(entry, now)
                else:
                    self._counts[slot][self._tables[slot][reply]] += 1
                    entry[3] += 1
                return
            if reply is _VALUE:
                entry[3] += 1
            else:
                self._on_end(entry, reply, now)
            return
        self._meter.unexpected_replies += 1

    def _on_end(self, entry: list[Any], reply: Reply, now: int) -> None:
        """A reply other than a value to a text get or stats: a STAT line, or the reply that closes it."""
        if reply is _STAT:
            return
        group: Group = entry[0]
        counts = self._counts[group.slot]
        if reply is not _END:
            counts[self._tables[group.slot][reply]] += group.rows
        elif group.units:
            counts[OK] += group.rows
        else:
            counts[HIT] += entry[3]
            counts[MISS] += group.rows - entry[3]
        self._close(entry, now)

    def _close(self, entry: list[Any], now: int) -> None:
        """The oldest entry, which had a reply of its own coming, is answered."""
        self.entries.popleft()
        self.waiting -= 1
        self._record(entry, now)
        self._answered(entry[0].number)
