"""Runs the links of one replay process through every loop: connects them, starts each pass, ticks once a second
(timeouts, the per-second series, progress), and stops them all on Ctrl+C."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from membench.protocol.events import Command
from membench.replay.engine import Link
from membench.replay.feeder import Feeder
from membench.replay.inflight import Matcher
from membench.replay.options import ReplayOptions, Timing
from membench.replay.plan import Planner
from membench.replay.stats import Meter, MeterSnapshot, Totals, reply_table, suppressed_status
from membench.replay.survey import BatchSource
from membench.replay.targets import parse_target

_TICK_S = 1.0
# Ctrl+C, and a service manager's or `kill`'s polite stop: either ends the replay with what it measured.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
perf_ns = time.perf_counter_ns

TickCallback = Callable[[float, Meter], None]


@dataclass
class RunOutcome:
    """What one process's replay ended with, in picklable values, for the process that merges them."""

    snapshot: MeterSnapshot
    loops: int
    interrupted: bool
    elapsed_s: float
    began_ns: int  # perf_counter_ns when its replay began


@dataclass
class MergedRuns:
    """Several processes' (or actors') replays as one: counts and histograms added, the slowest one's time."""

    totals: Totals
    loops: int  # loops every one completed
    interrupted: bool
    elapsed_s: float
    failures: list[str]  # why a process gave no result: the merged one lacks its connections' operations

    @classmethod
    def of(cls, outcomes: list[RunOutcome], failures: list[str] | None = None) -> MergedRuns:
        totals = Totals()
        for outcome in outcomes:
            totals.merge(outcome.snapshot)
        return cls(totals=totals, loops=min(outcome.loops for outcome in outcomes),
                   interrupted=bool(failures) or any(outcome.interrupted for outcome in outcomes),
                   elapsed_s=max(outcome.elapsed_s for outcome in outcomes), failures=list(failures or []))


class Runner:
    """Runs the links of one process through every loop of the replay."""

    def __init__(self, planner: Planner, source: BatchSource, options: ReplayOptions,
                 on_tick: TickCallback | None = None) -> None:
        self.planner = planner
        self.source = source
        self.options = options
        self.meter = Meter(planner.commands, open_loop=options.timing is not Timing.ASAP)
        commands = [Command(name) for name in planner.commands]
        self.tables = [reply_table(command) for command in commands]
        self.suppressed = [suppressed_status(command) for command in commands]
        self.stopping = False
        self.interrupted = False
        self.loops_done = 0
        self.elapsed_s = 0.0
        self.began_ns = 0  # perf_counter_ns when the replay began (after connecting, at the start asked for)
        self._on_tick = on_tick
        self._targets = [parse_target(target) for target in options.targets]
        self.links: list[Link] = []
        self.matchers: list[Matcher] = []  # each link's in-flight matcher, by stream: what a group waits for
        self.uniques: dict[bytes, int] = {}  # key -> the CAS unique the servers last showed for it (for cas)
        self._last_tick_s = 0.0
        self.feeder = Feeder(planner, source)
        self._to_pump: list[Link] = []
        # Kept, not asked for at every pump: asyncio.get_running_loop() makes a getpid system call each time.
        self._loop: asyncio.AbstractEventLoop | None = None

    def outcome(self) -> RunOutcome:
        return RunOutcome(snapshot=self.meter.snapshot(), loops=self.loops_done, interrupted=self.interrupted,
                          elapsed_s=self.elapsed_s, began_ns=self.began_ns)

    def pump_soon(self, link: Link) -> None:
        """Send what `link` may send once this event loop iteration has read every reply that came: the writes
        of all links then go out together, and the server wakes once for many requests instead of once each.
        A link is pumped once however many times it was asked to be: links waiting on each other ask often."""
        if link.pump_due:
            return
        link.pump_due = True
        to_pump = self._to_pump
        if not to_pump:
            assert self._loop is not None, "links are pumped while the runner runs"
            self._loop.call_soon(self._pump_all)
        to_pump.append(link)

    def _pump_all(self) -> None:
        to_pump, self._to_pump = self._to_pump, []
        for link in to_pump:
            link.pump_due = False
            link.poke()

    def stop(self) -> None:
        """Ctrl+C: end now with what was done, whatever the servers do (a silent or garbage-speaking one too)."""
        if not self.stopping:
            self.stopping = True
            self.interrupted = True
            for link in self.links:
                link.interrupt()

    def _time_up(self) -> None:
        """--duration has passed: the replay ends as asked, which is no interruption."""
        if not self.stopping:
            self.stopping = True
            for link in self.links:
                link.interrupt()

    async def run(self, start_ns: int | None = None) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self.links = [Link(self, stream, self._targets[stream.target]) for stream in self.planner.streams]
        self.matchers = [link.matcher for link in self.links]
        self.feeder.links = self.links
        # Outside the main thread there is no signal handling: the caller stops the runner itself.
        with contextlib.suppress(RuntimeError, ValueError):
            for signum in STOP_SIGNALS:
                loop.add_signal_handler(signum, self.stop)
        try:
            await asyncio.gather(*(link.connect() for link in self.links))
            if start_ns is not None:
                await asyncio.sleep(max(0.0, (start_ns - perf_ns()) / 1e9))
            began = self.began_ns = perf_ns()
            cpu_began = os.times()
            ticker = loop.create_task(self._tick(began))
            if self.options.duration is not None:
                loop.call_later(self.options.duration, self._time_up)
            loops = self.options.loops
            while not self.stopping and (loops is None or self.loops_done < loops):
                # What lives through the run (survey, a kept plan) need not be walked by the cyclic garbage
                # collector again and again: each walk is a pause in the replay's timing.
                gc.freeze()
                base = perf_ns()
                self.feeder.start_pass()
                for link in self.links:
                    link.prepare(base)
                await asyncio.gather(*(link.begin() for link in self.links))
                if self.stopping:
                    break
                self.loops_done += 1
                if not self.feeder.planned:
                    # Nothing to send here (another worker's connections, or only unreplayable commands): a pass
                    # over nothing never waits, so looping "forever" would spin without ever seeing Ctrl+C.
                    self.loops_done = loops or 1
                    break
            ticker.cancel()
            end = perf_ns()
            self.elapsed_s = (end - began) / 1e9
            cpu_ended = os.times()
            self.meter.cpu_system_s = cpu_ended.system - cpu_began.system
            self.meter.cpu_s = cpu_ended.user - cpu_began.user + self.meter.cpu_system_s
            self._fold(self._last_tick_s, self.elapsed_s)
        finally:
            gc.unfreeze()
            for link in self.links:
                link.close()
            with contextlib.suppress(RuntimeError, ValueError):
                for signum in STOP_SIGNALS:
                    loop.remove_signal_handler(signum)

    async def _tick(self, began: int) -> None:
        check_every = min(self.options.timeout / 4, 0.1)
        next_fold = _TICK_S
        while True:
            await asyncio.sleep(check_every)
            now = perf_ns()
            for link in self.links:
                link.check_timeout(now)
            elapsed = (now - began) / 1e9
            if elapsed >= next_fold:
                self._fold(self._last_tick_s, elapsed)
                self._last_tick_s = elapsed
                next_fold += _TICK_S
                if self._on_tick is not None:
                    self._on_tick(elapsed, self.meter)

    def _fold(self, start_s: float, end_s: float) -> None:
        """One point of the per-second series, from what every link measured since the last."""
        for link in self.links:
            link.collect()
        self.meter.fold(start_s, end_s)
