"""The replay's I/O: one raw asyncio.Protocol per stream on uvloop, sending planned requests and timing replies.

Each link keeps its requests in order and in flight up to the recorded depth (or --pipeline), sends whatever is
sendable in one write, and attributes replies first-in first-out (opaques sort out quiet requests). In open-loop
timings a request also waits for its intended time; its latency is then measured both from that time (the
coordinated-omission corrected figure) and from the actual send. A lost connection costs the requests in flight
(counted `lost`); the link reconnects with backoff and goes on with the next request. A reply later than the
timeout counts every request in flight as `timeout` and reopens the connection, so nothing ever waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from membench.errors import MembenchError
from membench.protocol.encode import META_NOOP, binary_noop
from membench.protocol.events import Command, Reply, Response, Skipped
from membench.protocol.stream import ResponseStreamParser
from membench.replay.options import ReplayOptions, Timing, parse_target
from membench.replay.plan import (
    EXPECT_END,
    EXPECT_NONE,
    EXPECT_NOOP,
    EXPECT_QUIET,
    EXPECT_UNITS,
    INTERNAL_SLOT,
    Group,
    Plan,
    Stream,
)
from membench.replay.stats import HIT, LOST, MISS, NOREPLY, OK, TIMEOUT, Meter, reply_table, suppressed_status

_EARLY_NS = 100_000  # an open-loop request due within this is sent now: a timer costs more than it saves
_SEND_BUDGET = 256  # requests one pump may send before yielding, so a connection that never waits cannot hog
_TICK_S = 1.0
_FIRST_BACKOFF_S = 0.02
_MAX_BACKOFF_S = 1.0
_perf_ns = time.perf_counter_ns

TickCallback = Callable[[float, Meter], None]


def _drain_group(binary: bool) -> Group:
    payload = binary_noop(0) if binary else META_NOOP
    return Group(payload, INTERNAL_SLOT, 0, EXPECT_UNITS, 1, 0, 0, 0, 0)


class Link(asyncio.Protocol):
    """One socket replaying one stream, across reconnects and loops."""

    def __init__(self, runner: Runner, stream: Stream, address: tuple[str, int]) -> None:
        self._runner = runner
        self._loop = asyncio.get_running_loop()
        self._meter = runner.meter
        self._counts = runner.meter.counts
        self._tables = runner.tables
        self._suppressed = runner.suppressed
        self._groups = stream.groups
        self._count = len(stream.groups)
        self._binary = stream.binary
        self._drain = _drain_group(stream.binary)
        self.address = address
        self._pipeline = runner.options.pipeline
        self._timed = runner.options.timing is not Timing.ASAP
        self._timeout_ns = int(runner.options.timeout * 1e9)
        self._next = 0
        self._inflight: deque[list[Any]] = deque()
        self._waiting = 0  # requests in flight that will get a reply of their own (not quiet, not noreply)
        self._transport: asyncio.Transport | None = None
        self._parser = ResponseStreamParser()
        self._timer: asyncio.TimerHandle | None = None
        self._base_ns = 0
        self._done: asyncio.Future[None] | None = None
        self._closing = False
        self._reconnecting = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._parser = ResponseStreamParser()
        if self._done is not None and not self._done.done():
            self._pump()

    def data_received(self, data: bytes) -> None:
        now = _perf_ns()
        on_reply = self._on_reply
        for event in self._parser.receive(data, now):
            if event.__class__ is Skipped:
                # The server's bytes made no sense: nothing after them can be attributed any more.
                self._meter.unexpected_replies += 1
                if self._transport is not None:
                    self._transport.abort()
                return
            on_reply(cast(Response, event), now)
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._closing:
            return
        self._abandon(LOST)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._reconnecting = True
        self._loop.create_task(self._reconnect())

    # driving

    async def connect(self) -> None:
        host, port = self.address
        try:
            await self._loop.create_connection(lambda: self, host, port)
        except OSError as error:
            raise MembenchError(f"cannot connect to {host}:{port}: {error.strerror or error}") from None

    def begin(self, base_ns: int) -> asyncio.Future[None]:
        """Start one pass over the stream; the future resolves when every request is answered or written off."""
        self._next = 0
        self._base_ns = base_ns
        self._done = self._loop.create_future()
        self._pump()
        return self._done

    def poke(self) -> None:
        if self._transport is not None:
            self._pump()

    def close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()

    def check_timeout(self, now: int) -> None:
        if self._waiting and now - self._inflight[0][1] > self._timeout_ns and self._transport is not None:
            self._abandon(TIMEOUT)
            self._transport.abort()

    async def _reconnect(self) -> None:
        host, port = self.address
        deadline = time.monotonic() + self._runner.options.reconnect_timeout
        delay = _FIRST_BACKOFF_S
        while not self._closing:
            try:
                await self._loop.create_connection(lambda: self, host, port)
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
        counts = self._counts
        for group in self._groups[self._next :]:
            if group.slot >= 0:
                counts[group.slot][LOST] += group.rows
        self._next = self._count
        self._reconnecting = False
        self._finish_if_done()

    def _abandon(self, status: int) -> None:
        counts = self._counts
        for entry in self._inflight:
            group = entry[0]
            if group.slot >= 0:
                answered = entry[3] if group.expect in (EXPECT_UNITS, EXPECT_NOOP) else 0
                counts[group.slot][status] += group.rows - answered
        self._inflight.clear()
        self._waiting = 0

    def _on_timer(self) -> None:
        self._timer = None
        self.poke()

    def _pump(self) -> None:
        transport = self._transport
        done = self._done
        if transport is None or done is None or done.done():
            return
        groups, inflight, meter = self._groups, self._inflight, self._meter
        index, count = self._next, self._count
        stopping = self._runner.stopping
        timed = self._timed
        pipeline = self._pipeline
        waiting = self._waiting
        now = _perf_ns()
        budget = _SEND_BUDGET
        payloads = []
        while index < count and not stopping and budget:
            group = groups[index]
            if waiting >= (pipeline or group.outstanding + 1):
                break
            due = now
            if timed:
                due = self._base_ns + group.at_ns
                if due - now > _EARLY_NS:
                    if self._timer is None:
                        self._timer = self._loop.call_later((due - now) / 1e9, self._on_timer)
                    break
                meter.lateness.append((now - due) // 1000 if now > due else 0)
            payloads.append(group.payload)
            expect = group.expect
            if expect == EXPECT_NONE:
                self._counts[group.slot][NOREPLY] += group.rows
                meter.requests[group.slot] += 1
            else:
                inflight.append([group, now, due, 0])
                if expect != EXPECT_QUIET:
                    waiting += 1
            index += 1
            budget -= 1
        self._next = index
        ending = index == count or stopping
        if ending and inflight and not waiting:
            # Only quiet requests are left in flight: a noop makes the server show they are done.
            payloads.append(self._drain.payload)
            inflight.append([self._drain, now, now, 0])
            waiting += 1
        self._waiting = waiting
        if payloads:
            transport.write(payloads[0] if len(payloads) == 1 else b"".join(payloads))
        if not budget:
            self._loop.call_soon(self._pump)
        elif ending:
            self._finish_if_done()

    def _finish_if_done(self) -> None:
        done = self._done
        if done is None or done.done() or self._inflight or self._reconnecting:
            return
        if self._next == self._count or self._runner.stopping:
            done.set_result(None)

    def _record(self, entry: list[Any], now: int) -> None:
        slot = entry[0].slot
        if slot >= 0:
            self._meter.latencies[slot].append((now - entry[1]) // 1000)
            self._meter.requests[slot] += 1
            if self._timed:
                self._meter.intended[slot].append((now - entry[2]) // 1000)

    def _on_reply(self, response: Response, now: int) -> None:
        inflight = self._inflight
        reply = response.reply
        while inflight:
            entry = inflight[0]
            group: Group = entry[0]
            expect = group.expect
            slot = group.slot
            if expect == EXPECT_QUIET:
                inflight.popleft()
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
                    inflight.popleft()
                    self._waiting -= 1
                    self._record(entry, now)
                return
            if expect == EXPECT_END:
                if reply is Reply.VALUE:
                    entry[3] += 1
                    return
                if reply is Reply.STAT:
                    return
                inflight.popleft()
                self._waiting -= 1
                counts = self._counts[slot]
                if reply is not Reply.END:
                    counts[self._tables[slot][reply]] += group.rows
                elif group.units:
                    counts[OK] += group.rows
                else:
                    counts[HIT] += entry[3]
                    counts[MISS] += group.rows - entry[3]
                self._record(entry, now)
                return
            if expect == EXPECT_NOOP:
                if reply is Reply.NOOP:
                    inflight.popleft()
                    self._waiting -= 1
                    self._counts[slot][self._suppressed[slot]] += group.rows - entry[3]
                    self._record(entry, now)
                else:
                    self._counts[slot][self._tables[slot][reply]] += 1
                    entry[3] += 1
                return
        self._meter.unexpected_replies += 1


class Runner:
    """Runs the links of one process through every loop of the replay."""

    def __init__(self, plan: Plan, options: ReplayOptions, on_tick: TickCallback | None = None) -> None:
        self.plan = plan
        self.options = options
        self.meter = Meter(plan.commands, open_loop=options.timing is not Timing.ASAP)
        commands = [Command(name) for name in plan.commands]
        self.tables = [reply_table(command) for command in commands]
        self.suppressed = [suppressed_status(command) for command in commands]
        self.stopping = False
        self.interrupted = False
        self.loops_done = 0
        self.elapsed_s = 0.0
        self._on_tick = on_tick
        self._targets = [parse_target(target) for target in options.targets]
        self._links: list[Link] = []
        self._last_tick_s = 0.0

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.interrupted = True
            for link in self._links:
                link.poke()

    async def run(self, start_ns: int | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._links = [Link(self, stream, self._targets[stream.target]) for stream in self.plan.streams]
        # Outside the main thread there is no signal handling: the caller stops the runner itself.
        with contextlib.suppress(RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, self.stop)
        try:
            await asyncio.gather(*(link.connect() for link in self._links))
            if start_ns is not None:
                await asyncio.sleep(max(0.0, (start_ns - _perf_ns()) / 1e9))
            began = _perf_ns()
            cpu_began = time.process_time()
            ticker = loop.create_task(self._tick(began))
            loops = self.options.loops
            if not self._links:
                # Nothing to send here (another worker's connections, or only unreplayable commands): a pass over
                # nothing never waits, so looping "forever" would spin without ever seeing Ctrl+C.
                self.loops_done = loops or 1
            while self._links and not self.stopping and (loops is None or self.loops_done < loops):
                base = _perf_ns()
                await asyncio.gather(*(link.begin(base) for link in self._links))
                if not self.stopping:
                    self.loops_done += 1
            ticker.cancel()
            end = _perf_ns()
            self.elapsed_s = (end - began) / 1e9
            self.meter.cpu_s = time.process_time() - cpu_began
            self.meter.fold(self._last_tick_s, self.elapsed_s)
        finally:
            for link in self._links:
                link.close()
            with contextlib.suppress(RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGINT)

    async def _tick(self, began: int) -> None:
        check_every = min(self.options.timeout / 4, 0.1)
        next_fold = _TICK_S
        while True:
            await asyncio.sleep(check_every)
            now = _perf_ns()
            for link in self._links:
                link.check_timeout(now)
            elapsed = (now - began) / 1e9
            if elapsed >= next_fold:
                self.meter.fold(self._last_tick_s, elapsed)
                self._last_tick_s = elapsed
                next_fold += _TICK_S
                if self._on_tick is not None:
                    self._on_tick(elapsed, self.meter)
