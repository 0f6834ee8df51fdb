"""What a replay found, as typed records: per command, the hit ratios, failures, the run's settings and cost.

`build_result` folds the merged Totals of the workers into a ReplayResult; `ReplayResult.to_dict()` is what
--json writes (the keys are documented in the README and stay as they are).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from membench.profile.schema import Status
from membench.replay.cluster import ClusterRun
from membench.replay.keys import KeySynthesizer
from membench.replay.options import ReplayOptions, Timing
from membench.replay.stats import ERROR_STATUSES, STATUS_NAMES, Totals, percentiles
from membench.replay.survey import RETRIEVALS, Survey
from membench.replay.warm import WarmResult

_RETRIEVAL_NAMES = frozenset(command.value for command in RETRIEVALS)
_HIT, _MISS = STATUS_NAMES.index(Status.HIT.value), STATUS_NAMES.index(Status.MISS.value)


@dataclass(frozen=True)
class Latencies:
    """Percentiles of an HDR histogram in µs (all 0 when it is empty)."""

    p50: int
    p90: int
    p99: int
    p99_9: int
    max: int
    mean: float

    @classmethod
    def of(cls, histogram: HdrHistogram) -> Latencies:
        values = percentiles(histogram)
        return cls(p50=values["p50"], p90=values["p90"], p99=values["p99"], p99_9=values["p99.9"],
                   max=values["max"], mean=values["mean"])

    def to_dict(self) -> dict[str, float]:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99, "p99.9": self.p99_9, "max": self.max,
                "mean": self.mean}


@dataclass(frozen=True)
class CommandResult:
    ops: int
    requests: int
    ops_per_s: float
    statuses: dict[str, int]  # replayed outcomes by status name
    recorded_statuses: dict[str, int]  # the same command's outcomes in the recording, for comparison
    latency: Latencies  # from the send to the reply
    hits: int | None = None  # retrieval commands only
    misses: int | None = None
    latency_from_intended: Latencies | None = None  # open-loop timing: from the scheduled send time

    @property
    def errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status in ERROR_STATUSES)

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"ops": self.ops, "requests": self.requests, "ops_per_s": self.ops_per_s,
                                 "statuses": self.statuses, "recorded_statuses": self.recorded_statuses,
                                 "latency_us": self.latency.to_dict()}
        if self.hits is not None:
            entry["hits"] = self.hits
            entry["misses"] = self.misses
        if self.latency_from_intended is not None:
            entry["latency_from_intended_us"] = self.latency_from_intended.to_dict()
        return entry


@dataclass(frozen=True)
class HitRatios:
    recorded: float | None  # hits / (hits + misses) of the retrievals in the profile
    replayed: float | None  # the same on the test servers


@dataclass(frozen=True)
class ReplayedProfile:
    rows: int
    requests: int
    connections: int
    duration_s: float
    skipped_commands: dict[str, int]  # commands replay does not send, by name


@dataclass
class ReplayResult:
    """Every figure of one replay."""

    completed: bool  # every loop ran to its end (not interrupted), with failures within --max-error-ratio
    interrupted: bool
    loops: int
    duration_s: float
    ops: int
    requests: int
    commands: dict[str, CommandResult]
    hit_ratio: HitRatios
    errors: dict[str, int]  # error outcomes by status, all commands together
    failures: int  # operations lost, timed out, or failed beyond what the recording had
    error_ratio: float
    max_error_ratio: float
    settings: dict[str, Any]  # the options the replay ran with, echoed as given
    profile: ReplayedProfile
    warm: WarmResult
    merged_short_keys: int  # short recorded keys that had to share a replayed key
    unexpected_replies: int
    reconnects: int
    client_cpu_s: float
    client_cpu_us_per_op: float | None
    client_cpu_system_us_per_op: float | None  # the kernel's part of client_cpu_us_per_op
    series: list[dict[str, Any]]  # one point per second: counts and that second's latency percentiles
    lateness: Latencies | None = None  # open-loop timing: how late sends left against their schedule
    warnings: list[str] = field(default_factory=list)
    cluster: ClusterRun | None = None  # --cluster: how the replay was spread over the Ray cluster

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "completed": self.completed, "interrupted": self.interrupted, "loops": self.loops,
            "duration_s": self.duration_s, "ops": self.ops, "requests": self.requests,
            "ops_per_s": round(self.ops / self.duration_s, 1) if self.duration_s else 0.0,
            "commands": {name: command.to_dict() for name, command in self.commands.items()},
            "hit_ratio": {"recorded": self.hit_ratio.recorded, "replayed": self.hit_ratio.replayed},
            "errors": self.errors, "failures": self.failures, "error_ratio": self.error_ratio,
            "max_error_ratio": self.max_error_ratio, "options": self.settings,
            "profile": vars(self.profile).copy(),
            "warm": {"keys": self.warm.keys, "errors": self.warm.errors},
            "keys": {"merged_short_keys": self.merged_short_keys},
            "unexpected_replies": self.unexpected_replies, "reconnects": self.reconnects,
            "client_cpu_s": self.client_cpu_s, "client_cpu_us_per_op": self.client_cpu_us_per_op,
            "client_cpu_system_us_per_op": self.client_cpu_system_us_per_op,
            "series": self.series,
        }
        if self.lateness is not None:
            document["lateness_us"] = self.lateness.to_dict()
        if self.cluster is not None:
            document["cluster"] = self.cluster.to_dict()
        document["warnings"] = self.warnings
        return document


def build_result(profile: Survey, options: ReplayOptions, keys: KeySynthesizer, warmed: WarmResult,
                 totals: Totals, loops: int, interrupted: bool, elapsed: float) -> ReplayResult:
    commands = {name: _command(name, counts, profile, totals, options, elapsed)
                for name, counts in sorted(totals.counts.items())}
    errors: Counter[str] = Counter()
    for command in commands.values():
        errors.update({status: count for status, count in command.statuses.items() if status in ERROR_STATUSES})
    ops = sum(command.ops for command in commands.values())
    failures = _failures(commands, loops)  # garbage replies cost the operations in flight: counted lost
    error_ratio = failures / ops if ops else 0.0
    return ReplayResult(
        completed=not interrupted and ops > 0 and error_ratio <= options.max_error_ratio,  # nothing sent: no measure
        interrupted=interrupted, loops=loops, duration_s=round(elapsed, 6), ops=ops,
        requests=sum(command.requests for command in commands.values()), commands=commands,
        hit_ratio=HitRatios(recorded=_recorded_hit_ratio(profile.recorded), replayed=_replayed_hit_ratio(totals)),
        errors=dict(errors), failures=failures, error_ratio=round(error_ratio, 6),
        max_error_ratio=options.max_error_ratio, settings=_settings(options),
        profile=ReplayedProfile(rows=profile.rows, requests=profile.requests,
                                connections=len(profile.connection_protocols),
                                duration_s=round((profile.last_ns - profile.first_ns) / 1e9, 6),
                                skipped_commands=dict(profile.skipped)),
        warm=warmed, merged_short_keys=keys.merged, unexpected_replies=totals.unexpected_replies,
        reconnects=totals.reconnects, client_cpu_s=round(totals.cpu_s, 3),
        client_cpu_us_per_op=round(totals.cpu_s * 1e6 / ops, 2) if ops else None,
        client_cpu_system_us_per_op=round(totals.cpu_system_s * 1e6 / ops, 2) if ops else None,
        series=totals.series_with_latency(),
        lateness=Latencies.of(totals.lateness) if options.timing is not Timing.ASAP else None,
    )


def _command(name: str, counts: list[int], profile: Survey, totals: Totals, options: ReplayOptions,
             elapsed: float) -> CommandResult:
    statuses = {STATUS_NAMES[i]: count for i, count in enumerate(counts) if count}
    retrieval = name in _RETRIEVAL_NAMES
    return CommandResult(
        ops=sum(counts), requests=totals.requests[name],
        ops_per_s=round(sum(counts) / elapsed, 1) if elapsed else 0.0,
        statuses=statuses, recorded_statuses=dict(profile.recorded.get(name, {})),
        latency=Latencies.of(totals.histograms[name]),
        hits=statuses.get(Status.HIT.value, 0) if retrieval else None,
        misses=statuses.get(Status.MISS.value, 0) if retrieval else None,
        latency_from_intended=(Latencies.of(totals.intended_histograms[name])
                               if options.timing is not Timing.ASAP else None),
    )


def _settings(options: ReplayOptions) -> dict[str, Any]:
    return {
        "targets": options.targets, "protocol": options.protocol.value if options.protocol else "recorded",
        "timing": options.timing.value, "order": "key" if options.key_order else "connection",
        "speed": options.speed, "rate": options.rate, "connections": options.connections,
        "pipeline": options.pipeline, "warm": options.warm, "loops": options.loops,
        "duration_s": options.duration, "workers": options.workers, "timeout_s": options.timeout,
        "distribution": options.distribution.value,
    }


def _recorded_hit_ratio(recorded: dict[str, Counter[str]]) -> float | None:
    hits = sum(statuses[Status.HIT.value] for name, statuses in recorded.items() if name in _RETRIEVAL_NAMES)
    misses = sum(statuses[Status.MISS.value] for name, statuses in recorded.items() if name in _RETRIEVAL_NAMES)
    return round(hits / (hits + misses), 6) if hits + misses else None


def _replayed_hit_ratio(totals: Totals) -> float | None:
    retrievals = [counts for name, counts in totals.counts.items() if name in _RETRIEVAL_NAMES]
    hits = sum(counts[_HIT] for counts in retrievals)
    misses = sum(counts[_MISS] for counts in retrievals)
    return round(hits / (hits + misses), 6) if hits + misses else None


def _failures(commands: dict[str, CommandResult], loops: int) -> int:
    """Operations that failed: lost, timed out, or an error status beyond what the recording itself had."""
    failed = 0
    for command in commands.values():
        for status, count in command.statuses.items():
            if status in ERROR_STATUSES:
                failed += max(0, count - command.recorded_statuses.get(status, 0) * max(1, loops))
    return failed
