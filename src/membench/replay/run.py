"""`membench replay`: survey the profile, warm the servers, run the workers, merge and report."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvloop
from rich.console import Console

from membench.errors import MembenchError
from membench.outputs import write_result
from membench.replay.cluster import connect as connect_cluster
from membench.replay.cluster import run_on_cluster
from membench.replay.ketama import Continuum
from membench.replay.keys import KeySynthesizer
from membench.replay.memtier import memtier_document
from membench.replay.options import ReplayOptions
from membench.replay.plan import SLICE_ROWS, Planner
from membench.replay.report import hdr_log, render
from membench.replay.result import ReplayResult, build_result
from membench.replay.runner import STOP_SIGNALS, MergedRuns, Runner, RunOutcome
from membench.replay.stats import Meter
from membench.replay.survey import RETRIEVALS, BatchSource, Survey, survey
from membench.replay.targets import Target, connect_blocking, parse_target
from membench.replay.warm import WarmResult, warm_up
from membench.status_line import StatusLine

_RETRIEVAL_NAMES = frozenset(command.value for command in RETRIEVALS)
_PROGRESS_AFTER_S = 2.0  # short runs print only the final table
_WORKER_POLL_S = 0.2


def run_replay(profile: Path, options: ReplayOptions, console: Console | None = None) -> ReplayResult:
    from membench.profile.reader import ProfileReader

    reader = ProfileReader(profile)
    return replay(lambda: reader.batches(batch_size=SLICE_ROWS * 16), options, console,
                  lambda: reader.read_problems, profile)


def replay(source: BatchSource, options: ReplayOptions, console: Console | None = None,
           problems: Callable[[], list[str]] | None = None, path: Path | None = None) -> ReplayResult:
    """Replay the rows `source` gives (a fresh iterator of schema.SCHEMA batches per call); `problems` tells what
    the source could not read (a corrupt part), which the result reports as warnings; `path` is the profile file
    the rows come from, which a cluster's actors read themselves."""
    targets = [parse_target(target) for target in options.targets]
    for target in targets:
        _check_reachable(target, options.timeout)
    if options.cluster is not None:
        connect_cluster(options.cluster)  # an unreachable cluster fails before the survey, not after
    profile = survey(source)
    if profile.rows == 0:
        unread = problems() if problems is not None else []
        raise MembenchError("the profile holds no operations: nothing to replay"
                            + (f" ({unread[0]})" if unread else ""))
    keys = KeySynthesizer(profile.short_pairs)
    continuum = Continuum(targets, options.distribution)
    warmed = warm_up(profile.warm, keys, continuum, targets, options.timeout) if options.warm else WarmResult()
    progress = _Progress(console) if console is not None and options.progress else None
    cluster = None
    if options.cluster is not None:
        if path is None:
            raise MembenchError("--cluster replays a profile file, which every node reads")
        merged, cluster = run_on_cluster(path, profile, options, continuum, keys, progress)
    elif options.workers == 1:
        merged = _run_here(source, profile, options, continuum, keys, progress)
    else:
        merged = _run_workers(source, profile, options, continuum, keys, progress)
    if progress is not None:
        progress.clear()
    result = build_result(profile, options, keys, warmed, merged.totals, merged.loops, merged.interrupted,
                          merged.elapsed_s)
    result.warnings = list(problems()) if problems is not None else []
    if not result.ops:
        result.warnings.append("no operation was replayed: this run measured nothing")
    result.cluster = cluster
    if console is not None:
        render(result, console)
    # The table is out before the files: if writing them fails, the result is still in front of the user.
    if options.hdr_log_path is not None:
        write_result(options.hdr_log_path, hdr_log(merged.totals), "--hdr-log")
    if options.json_path is not None:
        write_result(options.json_path, json.dumps(result.to_dict(), indent=2) + "\n", "--json")
    if options.memtier_json_path is not None:
        document = memtier_document(merged.totals, merged.elapsed_s)
        write_result(options.memtier_json_path, json.dumps(document, indent=2) + "\n", "--memtier-json")
    return result


def _check_reachable(target: Target, timeout: float) -> None:
    try:
        with connect_blocking(target, timeout):
            pass
    except OSError as error:
        raise MembenchError(f"cannot connect to target {target}: {error.strerror or error}") from None


class _Progress:
    """`membench replay`'s live line on long runs: elapsed, ops/s, ops, errors."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._line = StatusLine(console)

    def update(self, elapsed_s: float, ops: int, errors: int) -> None:
        rate = self._line.rate(elapsed_s, ops)
        if rate is None or elapsed_s < _PROGRESS_AFTER_S or not self._console.is_terminal:
            return
        self._line.show(f"{elapsed_s:7.1f}s  {rate:10,.0f} ops/s  {ops:12,} ops  {errors:8,} errors")

    def clear(self) -> None:
        self._line.clear()


def _run_here(source: BatchSource, profile: Survey, options: ReplayOptions, continuum: Continuum,
              keys: KeySynthesizer, progress: _Progress | None) -> MergedRuns:
    planner = Planner(profile, options, continuum, keys)

    def tick(elapsed_s: float, meter: Meter) -> None:
        if progress is not None:
            progress.update(elapsed_s, meter.rows(), meter.errors())

    runner = Runner(planner, source, options, tick)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
        loop_runner.run(runner.run())
    return MergedRuns.of([runner.outcome()])


def _worker(index: int, source: BatchSource, profile: Survey, options: ReplayOptions, continuum: Continuum,
            keys: KeySynthesizer, barrier: Any, start_ns: Any, messages: Any) -> None:
    # The parent forwards Ctrl+C; until the event loop takes SIGINT over, the default handler must not kill us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        planner = Planner(profile, options, continuum, keys, index, options.workers)
        barrier.wait()

        def tick(elapsed_s: float, meter: Meter) -> None:
            messages.put(("tick", index, elapsed_s, meter.rows(), meter.errors()))

        runner = Runner(planner, source, options, tick)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
            loop_runner.run(runner.run(start_ns.value))
        messages.put(("done", index, runner.outcome()))
    except MembenchError as error:
        barrier.abort()
        messages.put(("error", index, str(error)))
    except threading.BrokenBarrierError:
        pass  # another worker failed and reported why


def _run_workers(source: BatchSource, profile: Survey, options: ReplayOptions, continuum: Continuum,
                 keys: KeySynthesizer, progress: _Progress | None) -> MergedRuns:
    context = multiprocessing.get_context("fork")  # workers inherit the survey and the batch source as they are
    messages = context.Queue()
    start_ns = context.Value("q", 0)

    def set_start() -> None:
        start_ns.value = time.perf_counter_ns() + 50_000_000  # CLOCK_MONOTONIC: the same clock in every process

    barrier = context.Barrier(options.workers, action=set_start)
    processes = [context.Process(target=_worker, args=(index, source, profile, options, continuum, keys, barrier,
                                                       start_ns, messages), daemon=True)
                 for index in range(options.workers)]
    for process in processes:
        process.start()

    def forward(_signum: int, _frame: FrameType | None) -> None:
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGINT)

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    outcomes: list[RunOutcome] = []
    ticks: dict[int, tuple[float, int, int]] = {}
    try:
        while len(outcomes) < len(processes):
            try:
                message = messages.get(timeout=_WORKER_POLL_S)
            except queue.Empty:
                if not any(process.is_alive() for process in processes):
                    raise MembenchError("a replay worker died without reporting") from None
                continue
            kind, index = message[0], message[1]
            if kind == "error":
                raise MembenchError(message[2])
            if kind == "tick":
                ticks[index] = message[2:]
                if progress is not None:
                    progress.update(max(t[0] for t in ticks.values()), sum(t[1] for t in ticks.values()),
                                    sum(t[2] for t in ticks.values()))
                continue
            outcomes.append(message[2])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
    return MergedRuns.of(outcomes)
