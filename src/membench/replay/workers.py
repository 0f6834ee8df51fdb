"""`membench replay --workers N`: forked worker processes, each replaying its share of the connections, and the
supervision that keeps what every worker measured when one of them fails or dies."""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvloop

from membench.errors import MembenchError
from membench.replay.ketama import Continuum
from membench.replay.keys import KeySynthesizer
from membench.replay.options import ReplayOptions
from membench.replay.plan import Planner
from membench.replay.runner import STOP_SIGNALS, MergedRuns, Runner, RunOutcome
from membench.replay.stats import Meter
from membench.replay.survey import BatchSource, Survey

_WORKER_POLL_S = 0.2
_START_AHEAD_NS = 50_000_000  # every worker has built its plan at the barrier; this is for the wake-ups
_PR_SET_PDEATHSIG = 1

ProgressCallback = Callable[[float, int, int], None]  # elapsed seconds, operations, errors


@dataclass
class _Shared:
    """What the parent hands every forked worker."""

    source: BatchSource
    profile: Survey
    options: ReplayOptions
    continuum: Continuum
    keys: KeySynthesizer
    barrier: Any
    start_ns: Any
    messages: Any
    parent_pid: int


def _die_with_parent(parent_pid: int) -> None:
    """A worker whose parent is gone (SIGKILL, a crash) has nobody to report to: it must not replay on forever."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _worker(index: int, shared: _Shared) -> None:
    # The parent forwards Ctrl+C; until the event loop takes SIGINT over, the default handler must not kill us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(shared.parent_pid)
    messages = shared.messages
    try:
        planner = Planner(shared.profile, shared.options, shared.continuum, shared.keys, index,
                          shared.options.workers)
        shared.barrier.wait()

        def tick(elapsed_s: float, meter: Meter) -> None:
            messages.put(("tick", index, elapsed_s, meter.rows(), meter.errors()))

        runner = Runner(planner, shared.source, shared.options, tick)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
            loop_runner.run(runner.run(shared.start_ns.value))
        messages.put(("done", index, runner.outcome()))
    except MembenchError as error:
        shared.barrier.abort()
        messages.put(("error", index, str(error)))
    except threading.BrokenBarrierError:
        messages.put(("aborted", index))  # another worker failed before the start and reported why


def how_it_ended(exitcode: int | None) -> str:
    """A dead process's end, said for a message: "was killed by SIGKILL", "exited with status 1"."""
    if exitcode is None:
        return "ended"
    if exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"


@dataclass
class _Supervisor:
    """Reads the workers' messages until each has reported or died. The first failure stops the others, so the
    load does not go on lopsided, and their results are kept: a partial replay, said so, not a lost one."""

    processes: list[Any]
    messages: Any
    progress: ProgressCallback | None
    outcomes: list[RunOutcome] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    ticks: dict[int, tuple[float, int, int]] = field(default_factory=dict)
    pending: set[int] = field(default_factory=set)

    def run(self) -> None:
        self.pending = set(range(len(self.processes)))
        while self.pending:
            try:
                message = self.messages.get(timeout=_WORKER_POLL_S)
            except queue.Empty:
                self._notice_deaths()
                continue
            self._take(message)

    def stop_all(self) -> None:
        for index in sorted(self.pending):
            process = self.processes[index]
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGINT)

    def _take(self, message: tuple[Any, ...]) -> None:
        kind, index = message[0], message[1]
        if kind == "tick":
            self.ticks[index] = message[2:]
            if self.progress is not None:
                ticks = self.ticks.values()
                self.progress(max(t[0] for t in ticks), sum(t[1] for t in ticks), sum(t[2] for t in ticks))
            return
        self.pending.discard(index)
        if kind == "done":
            self.outcomes.append(message[2])
        elif kind == "error":
            self._fail(message[2])

    def _notice_deaths(self) -> None:
        dead = [index for index in self.pending if self.processes[index].exitcode is not None]
        # A worker that reported and then ended has its report in the queue already: read those first.
        while True:
            try:
                self._take(self.messages.get_nowait())
            except queue.Empty:
                break
        for index in dead:
            if index in self.pending:
                self.pending.discard(index)
                self._fail(f"replay worker {index + 1} of {len(self.processes)} "
                           f"{how_it_ended(self.processes[index].exitcode)} before reporting: its connections' "
                           "operations are missing from the result")

    def _fail(self, why: str) -> None:
        if not self.failures:
            self.stop_all()
        self.failures.append(why)


def run_workers(source: BatchSource, profile: Survey, options: ReplayOptions, continuum: Continuum,
                keys: KeySynthesizer, progress: ProgressCallback | None) -> MergedRuns:
    context = multiprocessing.get_context("fork")  # workers inherit the survey and the batch source as they are
    start_ns = context.Value("q", 0)

    def set_start() -> None:
        start_ns.value = time.perf_counter_ns() + _START_AHEAD_NS  # CLOCK_MONOTONIC: the same in every process

    shared = _Shared(source=source, profile=profile, options=options, continuum=continuum, keys=keys,
                     barrier=context.Barrier(options.workers, action=set_start), start_ns=start_ns,
                     messages=context.Queue(), parent_pid=os.getpid())
    processes = [context.Process(target=_worker, args=(index, shared), daemon=True)
                 for index in range(options.workers)]
    for process in processes:
        process.start()
    supervisor = _Supervisor(processes=processes, messages=shared.messages, progress=progress)

    def forward(_signum: int, _frame: FrameType | None) -> None:
        supervisor.stop_all()

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        supervisor.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
    if not supervisor.outcomes:
        raise MembenchError(supervisor.failures[0] if supervisor.failures
                            else "no replay worker reported a result")
    return MergedRuns.of(supervisor.outcomes, supervisor.failures)
