"""The replay's I/O: one raw asyncio.Protocol per stream on uvloop, sending planned requests and timing replies.

A feeder plans the profile a slice at a time into bounded per-link queues as the links empty them, so a replay of
any size starts at once and holds a bounded number of planned requests; a small profile's plan is kept after the
first loop and replayed without planning again. Each link keeps its requests in order and in flight up to the
recorded depth (or --pipeline), sends whatever is sendable in one write, and hands the replies to its in-flight
matcher (inflight.py), which attributes them first-in first-out (opaques sort out quiet requests). In open-loop
timings a request also waits for its intended time; its latency is then measured both from that time (the
coordinated-omission corrected figure) and from the actual send. A lost connection costs the requests in flight
(counted `lost`); the link reconnects with backoff and goes on with the next request. A reply later than the
timeout counts every request in flight as `timeout` and reopens the connection, so nothing ever waits forever.

Replies go through the one response parser of the project, inside the in-flight matcher: its compiled twin
parses and attributes a whole read in one call, with no Python object per reply.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from membench.errors import MembenchError
from membench.protocol.encode import META_NOOP, binary_noop
from membench.protocol.events import Command
from membench.replay.inflight import Matcher, new_inflight
from membench.replay.options import Timing
from membench.replay.plan import Stream
from membench.replay.requests import (
    CAS_NONE,
    CAS_PLACEHOLDER,
    CAS_STALE,
    EXPECT_NONE,
    EXPECT_UNITS,
    INTERNAL_SLOT,
    Group,
)
from membench.replay.stats import LOST, NOREPLY, TIMEOUT
from membench.replay.targets import Target, connect

if TYPE_CHECKING:
    from membench.replay.runner import Runner

_EARLY_NS = 100_000  # an open-loop request due within this is sent now: a timer costs more than it saves
_SEND_BUDGET = 256  # requests one pump may send before yielding, so a connection that never waits cannot hog
_FIRST_BACKOFF_S = 0.02
_MAX_BACKOFF_S = 1.0
_perf_ns = time.perf_counter_ns


def _drain_group(binary: bool) -> Group:
    payload = binary_noop(0) if binary else META_NOOP
    return Group(payload=payload, slot=INTERNAL_SLOT, rows=0, expect=EXPECT_UNITS, units=1, at_ns=0, outstanding=0,
                 seq=0, number=INTERNAL_SLOT, after=(), cas=CAS_NONE, key=b"")


class Link(asyncio.Protocol):
    """One socket replaying one stream, across reconnects and loops."""

    def __init__(self, runner: Runner, stream: Stream, address: Target) -> None:
        self._runner = runner
        self._feeder = runner.feeder
        self._loop = asyncio.get_running_loop()
        self._meter = runner.meter
        self._counts = runner.meter.counts
        self._requests = runner.meter.requests
        self._binary = stream.binary
        # Uniques are kept only for a profile with cas: a gets-heavy one would otherwise remember every key.
        self._uniques = runner.uniques if Command.CAS.value in runner.planner.commands else None
        self._drain = _drain_group(stream.binary)
        self.address = address
        self.queue: deque[Sequence[Group]] = deque()
        self._chunk: Sequence[Group] = []
        self._next = 0
        self._pipeline = runner.options.pipeline
        self._timed = runner.options.timing is not Timing.ASAP
        self._timeout_ns = int(runner.options.timeout * 1e9)
        self._inflight = new_inflight(runner.tables, runner.suppressed, self._timed, self._uniques)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._base_ns = 0
        self._done: asyncio.Future[None] | None = None
        self._active = False  # a pass is under way and not finished
        self._closing = False
        self._reconnecting = False
        self._given_up = False
        self.waiters: list[Link] = []  # links whose next group waits for one of this link's to be answered
        self.pump_due = False  # the runner will pump this link soon (Runner.pump_soon)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._inflight.reconnected()
        if self._active:
            self.poke()

    def data_received(self, data: bytes) -> None:
        if not self._inflight.receive(data, _perf_ns()):
            # The server's bytes made no sense: nothing after them can be attributed any more.
            if self._transport is not None:
                self._transport.abort()
            return
        if self.waiters:
            self._wake_waiters()
        self._runner.pump_soon(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._closing:
            return
        self._inflight.abandon(LOST)
        self._wake_waiters()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._runner.stopping:
            self._finish_if_done()
        else:
            self._start_reconnect()

    # driving

    async def connect(self) -> None:
        try:
            await connect(self._loop, lambda: self, self.address)
        except OSError as error:
            raise MembenchError(f"cannot connect to {self.address}: {error.strerror or error}") from None

    def prepare(self, base_ns: int) -> None:
        """Forget the last pass. Every link is prepared before any begins: a link's first requests may wait for
        another's, which must not show the last pass's answers nor lose the waiters registered with it."""
        self._chunk = []
        self._next = 0
        self._base_ns = base_ns
        self._given_up = False
        self._inflight.answered = INTERNAL_SLOT
        self.waiters = []

    def begin(self) -> asyncio.Future[None]:
        """Start the pass prepared; the future resolves when every request is answered or written off."""
        self._done = self._loop.create_future()
        self._active = True
        if self._transport is None and not self._reconnecting:
            self._start_reconnect()  # the server was given up on in an earlier pass: try it again
        self.poke()
        return self._done

    def close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()

    def interrupt(self) -> None:
        """The replay stops: requests in flight are not waited for (nor counted: they have no outcome)."""
        self._inflight.drop()
        self._wake_waiters()
        self._reconnecting = False  # a reconnection still under way ends when the link closes
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._finish_if_done()

    @property
    def matcher(self) -> Matcher:
        return self._inflight

    @property
    def answered(self) -> int:
        """Number of the latest group answered (or written off): they end in order."""
        return self._inflight.answered

    def check_timeout(self, now: int) -> None:
        inflight = self._inflight
        if inflight.waiting and now - inflight.oldest_sent_ns() > self._timeout_ns and self._transport is not None:
            inflight.abandon(TIMEOUT)
            self._wake_waiters()
            self._transport.abort()

    def collect(self) -> None:
        """Move what the link measured since the last call into the runner's meter."""
        self._inflight.collect(self._meter)

    def _start_reconnect(self) -> None:
        self._reconnecting = True
        self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        deadline = time.monotonic() + self._runner.options.reconnect_timeout
        delay = _FIRST_BACKOFF_S
        while not self._closing:
            try:
                await connect(self._loop, lambda: self, self.address)
                self._meter.reconnects += 1
                self._reconnecting = False
                self.poke()  # connection_made pumped while still reconnecting: the pass may be complete now
                return
            except OSError:
                if time.monotonic() > deadline or self._runner.stopping:
                    self._give_up()
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)

    def _give_up(self) -> None:
        """The server stayed away: the rest of this pass is lost, and later passes will try again."""
        self._reconnecting = False
        self._given_up = True
        self._write_off()

    def _write_off(self) -> None:
        """Count every request of this pass still to send as lost, as the planner hands them over."""
        counts = self._counts
        chunk: Sequence[Group] | None = self._chunk[self._next :]
        while chunk:
            for group in chunk:
                if group.slot >= 0:
                    counts[group.slot][LOST] += group.rows
                self._answer(group.number)
            chunk = None if self._runner.stopping else self._feeder.take(self)
        self._chunk = []
        self._next = 0
        self._finish_if_done()

    def _answer(self, number: int) -> None:
        """Group `number` is done with, without a reply: the links waiting for this one may look again."""
        self._inflight.answer(number)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        if self.waiters:
            waiters, self.waiters = self.waiters, []
            for link in waiters:
                self._runner.pump_soon(link)

    def _with_unique(self, group: Group) -> bytes:
        """A cas's payload with the unique the server gave its key (or, where the recording's cas found the item
        changed, one that cannot match)."""
        unique = self._uniques.get(group.key, 0) if self._uniques is not None else 0
        if group.cas == CAS_STALE:
            unique += 1
        if self._binary:
            return group.payload[:16] + unique.to_bytes(8, "big") + group.payload[24:]
        return group.payload.replace(CAS_PLACEHOLDER, b"%d" % unique, 1)

    def _waits(self, group: Group) -> bool:
        """Whether a request the recording answered before this one, on another stream, is still unanswered."""
        links = self._runner.links
        for stream, number in group.after:
            link = links[stream]
            if link.answered < number:
                # Once: a link pumped again meanwhile (for its own replies) is still waiting there. Registered at
                # every pump, links waiting in a chain multiplied their wake-ups at each step until the replay
                # did nothing else.
                if self not in link.waiters:
                    link.waiters.append(self)
                self._runner.pump_soon(link)  # if it holds only quiet requests, it must show they are done
                return True
        return False

    def _on_timer(self) -> None:
        self._timer = None
        self.poke()

    def poke(self) -> None:
        """Send what may be sent now (what is sendable goes out in one write); once the server was given up on,
        write the rest of the pass off instead."""
        if self._given_up:
            self._write_off()
            return
        transport = self._transport
        if transport is None or not self._active:
            return
        chunk, index = self._chunk, self._next
        count = len(chunk)
        inflight = self._inflight
        stopping = self._runner.stopping
        timed = self._timed
        pipeline = self._pipeline
        now = _perf_ns()
        budget = _SEND_BUDGET
        payloads = []
        while budget:
            if index == count:
                taken = None if stopping else self._feeder.take(self)
                if taken is None:
                    break
                chunk = self._chunk = taken
                index = 0
                count = len(chunk)
            if not timed:
                admitted = inflight.admit(chunk, index, budget, now, pipeline or 0, self._runner.matchers, payloads)
                budget -= admitted - index
                index = admitted
                if index == count or not budget:
                    continue
            if pipeline and inflight.waiting >= pipeline:
                break  # the depth is reached: _send_one would refuse the group (a GroupBlock builds one to be read)
            if not self._send_one(chunk[index], now, payloads):
                break
            index += 1
            budget -= 1
        self._next = index
        ending = stopping or (index == count and not self.queue and self._feeder.exhausted)
        if (ending or self.waiters) and inflight.pending() and not inflight.waiting:
            # Only quiet requests are left in flight: a noop makes the server show they are done.
            payloads.append(self._drain.payload)
            inflight.sent(self._drain, now, now)
        if payloads:
            transport.write(payloads[0] if len(payloads) == 1 else b"".join(payloads))
        if not budget:
            self._loop.call_soon(self.poke)
        elif ending:
            self._finish_if_done()

    def _send_one(self, group: Group, now: int, payloads: list[bytes]) -> bool:
        """Sends the group the matcher stopped at (open loop: the next group) unless it must wait: for replies (the
        depth), for other streams' answers, or for its intended time."""
        inflight = self._inflight
        if inflight.waiting >= (self._pipeline or group.outstanding + 1) or (group.after and self._waits(group)):
            return False
        due = now
        if self._timed:
            due = self._base_ns + group.at_ns
            if due - now > _EARLY_NS:
                if self._timer is None:
                    self._timer = self._loop.call_later((due - now) / 1e9, self._on_timer)
                return False
            self._meter.lateness.append((now - due) // 1000 if now > due else 0)
        payloads.append(self._with_unique(group) if group.cas else group.payload)
        if group.expect == EXPECT_NONE:
            self._counts[group.slot][NOREPLY] += group.rows
            self._requests[group.slot] += 1
            self._answer(group.number)
        else:
            inflight.sent(group, now, due)
        return True

    def _finish_if_done(self) -> None:
        if not self._active or self._inflight.pending() or self._reconnecting:
            return
        finished = self._next == len(self._chunk) and not self.queue and self._feeder.exhausted
        if finished or self._runner.stopping:
            self._active = False
            if self._done is not None and not self._done.done():
                self._done.set_result(None)
