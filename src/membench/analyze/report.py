"""The numbers of an analysis, as plain dataclasses: one tree feeds the terminal, JSON and HTML renderers alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from membench.analyze.connections import Connections
from membench.analyze.histogram import Distribution, SizeBucket
from membench.analyze.mrc import MissRatioCurve
from membench.analyze.popularity import Popularity
from membench.analyze.series import TimeSeries
from membench.analyze.ttl import TtlStats
from membench.analyze.working_set import WorkingSet


@dataclass
class ProfileSummary:
    path: str
    source: str
    ports: list[int]
    created: str
    salt_fingerprint: str | None
    schema_version: int
    membench_version: str
    complete: bool
    start_ns: int | None  # first and last operation actually read
    end_ns: int | None


@dataclass
class CommandStats:
    command: str
    operations: int
    share: float  # of all operations
    quiet: int  # sent with noreply / meta q / a quiet binary opcode
    statuses: dict[str, int]  # status -> operations, most frequent first


@dataclass
class HitRatio:
    command: str  # a retrieval command, or "all" for every retrieval together
    hits: int
    misses: int
    ratio: float | None  # hits / (hits + misses); None without either
    other: int  # unanswered, errors: not counted in the ratio


@dataclass
class HotKey:
    key_hash: str  # hex of the keyed hash: the key itself is never in a profile
    operations: int
    share: float  # of keyed operations


@dataclass
class KeyStats:
    keyed_operations: int
    distinct_keys: int
    hottest_0_1pct_share: float | None  # share of keyed operations that go to the hottest 0.1% of distinct keys
    hottest_1pct_share: float | None
    hottest_10pct_share: float | None
    hottest: list[HotKey]
    key_size: Distribution  # bytes, over keyed operations
    key_size_histogram: list[SizeBucket] = field(default_factory=list)  # operations per power-of-two key length


@dataclass
class ValueSizes:
    stored: Distribution  # bytes sent by storage commands
    hit: Distribution  # bytes returned by hits
    stored_histogram: list[SizeBucket] = field(default_factory=list)  # operations per power-of-two size
    hit_histogram: list[SizeBucket] = field(default_factory=list)


@dataclass
class Latency:
    command: str  # or "all"
    us: Distribution  # server latency in µs: reply start - request end
    without_reply: int  # operations of this command whose reply was never seen (noreply, quiet, lost)


@dataclass
class Throughput:
    seconds: int  # calendar seconds the profile touches
    full_seconds: int  # of them, the ones entirely inside the recording (the first and last are partial)
    mean_ops_per_s: float | None
    peak_ops: int | None  # operations in the busiest second
    peak_offset_s: int | None  # that second, counted from the first second of the profile
    min_ops: int | None  # operations in the quietest full second
    min_offset_s: int | None


@dataclass
class CaptureHealth:
    complete: bool
    lossy: bool
    bytes_seen: int | None
    bytes_missing: int | None
    bytes_parsed: int | None  # of the bytes seen, those the parsers turned into commands and replies
    losses: dict[str, int]  # "section.counter" -> value, for every nonzero counter that means lost data
    counters: dict[str, dict[str, int]]  # every counter as recorded


@dataclass
class AnalysisReport:
    profile: ProfileSummary
    operations: int
    requests: int  # client commands (a multi-key get is one request, several operations)
    duration_s: float
    ops_per_s: float | None
    connections: Connections
    protocols: dict[str, int]  # protocol -> operations, most frequent first
    commands: list[CommandStats]
    hit_ratios: list[HitRatio]  # per retrieval command, then "all"
    keys: KeyStats
    value_sizes: ValueSizes
    latency: list[Latency]  # per command, then "all"
    throughput: Throughput
    health: CaptureHealth
    miss_ratio_curve: MissRatioCurve | None = None  # LRU miss ratio by cache size; None without keyed accesses
    popularity: Popularity | None = None  # skew over keys; None without keyed operations
    series: TimeSeries | None = None  # the profile window by window; None without operations
    ttl: TtlStats | None = None  # expiration times of the operations that carried one
    working_set: WorkingSet | None = None  # distinct keys, bytes and one-hit wonders per window of the series
    warnings: list[str] = field(default_factory=list)  # what makes these numbers less than the whole truth

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
