"""`membench replay`: survey the profile, warm the servers, run the workers, merge and report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

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
from membench.replay.runner import MergedRuns, Runner
from membench.replay.stats import Meter
from membench.replay.survey import RETRIEVALS, BatchSource, Survey, survey
from membench.replay.targets import Target, connect_blocking, parse_target
from membench.replay.warm import WarmResult, warm_up
from membench.replay.workers import run_workers
from membench.status_line import StatusLine

_RETRIEVAL_NAMES = frozenset(command.value for command in RETRIEVALS)
_PROGRESS_AFTER_S = 2.0  # short runs print only the final table


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
        merged = run_workers(source, profile, options, continuum, keys,
                             progress.update if progress is not None else None)
    if progress is not None:
        progress.clear()
    result = build_result(profile, options, keys, warmed, merged.totals, merged.loops, merged.interrupted,
                          merged.elapsed_s)
    result.warnings = list(problems()) if problems is not None else []
    result.warnings.extend(merged.failures)
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
