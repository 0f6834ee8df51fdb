"""What a replay measures: outcomes per command and status, and HDR latency histograms in microseconds.

The hot path only appends a latency to its stream's tally; once a second the streams hand their latencies over in
chunks (lists, or arrays from the compiled matcher), which are folded into the histograms with numpy
(HdrHistogram's per-value `record_value` costs about a microsecond of Python, as much as the rest of an operation).
Worker processes ship snapshots (counts and encoded histograms) that the parent merges.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from membench.profile.outcomes import REPLY_STATUS, success_status
from membench.profile.outcomes import suppressed_status as outcome_when_suppressed
from membench.profile.schema import Status
from membench.protocol.events import RETRIEVAL_COMMANDS, Command, Reply

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # an hour: any reply slower than that is a timeout long before
SIGNIFICANT_DIGITS = 3

STATUS_NAMES: list[str] = [status.value for status in Status] + ["timeout", "lost"]
STATUS_INDEX: dict[str, int] = {name: index for index, name in enumerate(STATUS_NAMES)}
HIT = STATUS_INDEX[Status.HIT]
MISS = STATUS_INDEX[Status.MISS]
OK = STATUS_INDEX[Status.OK]
NOREPLY = STATUS_INDEX[Status.NOREPLY]
TIMEOUT = STATUS_INDEX["timeout"]
LOST = STATUS_INDEX["lost"]
ERROR_STATUSES = frozenset({Status.ERROR.value, Status.CLIENT_ERROR.value, Status.SERVER_ERROR.value, "timeout",
                            "lost"})


def reply_table(command: Command) -> dict[Reply, int]:
    """Reply kind -> status index for one command, by the rules recording uses too."""
    table = {reply: STATUS_INDEX[status] for reply, status in REPLY_STATUS.items()}
    table[Reply.HD] = STATUS_INDEX[success_status(command)]
    # Replay sends only commands it models, so a reply line it cannot classify is the server's error.
    table[Reply.OTHER] = STATUS_INDEX[Status.ERROR]
    if command in RETRIEVAL_COMMANDS:
        table[Reply.NOT_FOUND] = MISS
    return table


def suppressed_status(command: Command) -> int:
    """The outcome index of a quiet request whose reply never came."""
    return STATUS_INDEX[outcome_when_suppressed(command)]


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


_LAYOUT = new_histogram()  # every histogram of a replay has this one's layout


@dataclass
class ValueCounts:
    """Many µs values as one histogram's counts (new_histogram()'s layout), to be added to several histograms."""

    counts: np.ndarray
    total: int
    lowest: int
    highest: int


def value_counts(values: list[int] | np.ndarray) -> ValueCounts | None:
    """HdrHistogram's own index arithmetic, vectorized; None for no values."""
    if not len(values):
        return None
    array = np.clip(np.asarray(values, dtype=np.int64), 0, HIGHEST_US)
    layout = _LAYOUT
    highest = int(array.max())
    if layout.unit_magnitude == 0 and highest < layout.sub_bucket_count:
        # The first bucket's values are their own index: most replies come in under 2 ms.
        index = array
    else:
        _, bit_length = np.frexp((array | layout.sub_bucket_mask).astype(np.float64))
        bucket = bit_length - layout.unit_magnitude - (layout.sub_bucket_half_count_magnitude + 1)
        sub_bucket = array >> (bucket + layout.unit_magnitude)
        index = ((bucket + 1) << layout.sub_bucket_half_count_magnitude) + sub_bucket - layout.sub_bucket_half_count
    counts = np.bincount(index, minlength=layout.counts_len)[: layout.counts_len]
    return ValueCounts(counts=counts, total=len(array), lowest=int(array.min()), highest=highest)


def add_counts(histogram: HdrHistogram, found: ValueCounts | None) -> None:
    if found is None:
        return
    counts = np.ctypeslib.as_array(histogram.counts)
    counts += found.counts.astype(counts.dtype)
    histogram.total_count += found.total
    histogram.min_value = min(histogram.min_value, found.lowest)
    histogram.max_value = max(histogram.max_value, found.highest)


def add_values(histogram: HdrHistogram, values: list[int] | np.ndarray) -> None:
    """Record many µs values at once (HdrHistogram's per-value `record_value` costs about a microsecond each)."""
    add_counts(histogram, value_counts(values))


def percentiles(histogram: HdrHistogram) -> dict[str, float]:
    """p50..max in µs (0 when empty)."""
    if histogram.get_total_count() == 0:
        return {"p50": 0, "p90": 0, "p99": 0, "p99.9": 0, "max": 0, "mean": 0.0}
    values = values_at_percentiles(histogram, (50, 90, 99, 99.9))
    return {
        "p50": values[50],
        "p90": values[90],
        "p99": values[99],
        "p99.9": values[99.9],
        "max": histogram.get_max_value(),
        "mean": round(mean_value(histogram), 1),
    }


def values_at_percentiles(histogram: HdrHistogram, wanted: Sequence[float]) -> dict[float, int]:
    """HdrHistogram.get_percentile_to_value_dict's answers (for percentiles above 0), computed over the counts
    with numpy: its Python iteration costs seconds over a replay's per-second histograms."""
    highest, _ = _index_values(histogram.counts_len)
    cumulative = np.cumsum(np.ctypeslib.as_array(histogram.counts)[: histogram.counts_len])
    total = histogram.get_total_count()
    values = {}
    for percentile in wanted:
        target = max(int(min(percentile, 100.0) * total / 100 + 0.5), 1)  # get_target_count_at_percentile
        values[percentile] = int(highest[min(int(np.searchsorted(cumulative, target, side="left")),
                                             histogram.counts_len - 1)])
    return values


def mean_value(histogram: HdrHistogram) -> float:
    """HdrHistogram.get_mean_value, with numpy."""
    total = histogram.get_total_count()
    if not total:
        return 0.0
    _, median = _index_values(histogram.counts_len)
    counts = np.ctypeslib.as_array(histogram.counts)[: histogram.counts_len].astype(np.float64)
    return float(np.dot(counts, median)) / total


@functools.cache
def _index_values(counts_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Per counts index of new_histogram()'s layout: the highest value it stands for (what percentiles report) and
    the middle of its range (what the mean weighs), from HdrHistogram's own arithmetic, once per process."""
    layout = new_histogram()
    assert layout.counts_len == counts_len
    lowest = [layout.get_value_from_index(index) for index in range(counts_len)]
    highest = np.array([layout.get_highest_equivalent_value(value) for value in lowest], dtype=np.int64)
    median = np.array([layout._hdr_median_equiv_value(value) for value in lowest], dtype=np.float64)
    return highest, median


Chunk = list[int] | np.ndarray  # latencies in µs, as a stream hands them over


def _joined(chunks: list[Chunk]) -> np.ndarray:
    return np.concatenate([np.asarray(chunk, dtype=np.int64) for chunk in chunks]) if chunks else np.empty(0, np.int64)


@dataclass
class SeriesPoint:
    """One second (one tick) of a replay: what ended in it."""

    start_s: float
    end_s: float
    ops: int
    requests: int
    errors: int

    def add(self, other: SeriesPoint) -> None:
        """Another worker's same tick."""
        self.ops += other.ops
        self.requests += other.requests
        self.errors += other.errors


@dataclass
class MeterSnapshot:
    """Everything one process measured, in picklable values (histograms encoded), for the parent to merge."""

    commands: list[str]
    counts: list[list[int]]
    requests: list[int]
    histograms: list[bytes]
    intended_histograms: list[bytes]
    lateness: bytes
    series: list[SeriesPoint]
    intervals: list[bytes]  # the encoded latency histogram of each series point
    unexpected_replies: int
    reconnects: int
    cpu_s: float
    cpu_system_s: float


@dataclass
class Meter:
    """One process's measurements. Slots are the plan's command slots."""

    commands: list[str]
    open_loop: bool
    counts: list[list[int]] = field(init=False)
    requests: list[int] = field(init=False)
    latencies: list[list[Chunk]] = field(init=False)  # µs from the actual send, since the last fold
    intended: list[list[Chunk]] = field(init=False)  # µs from the intended send (open loop), since the last fold
    lateness: list[int] = field(default_factory=list)  # µs the send came after its intended time
    histograms: list[HdrHistogram] = field(init=False)
    intended_histograms: list[HdrHistogram] = field(init=False)
    lateness_histogram: HdrHistogram = field(default_factory=new_histogram)
    series: list[SeriesPoint] = field(default_factory=list)
    intervals: list[bytes] = field(default_factory=list)  # encoded histogram of each series point
    unexpected_replies: int = 0
    reconnects: int = 0
    cpu_s: float = 0.0  # this process's CPU time while replaying
    cpu_system_s: float = 0.0  # the part of it spent in the kernel (system calls: mostly the network stack)
    _rows_folded: int = 0
    _errors_folded: int = 0

    def __post_init__(self) -> None:
        size = len(self.commands)
        self.counts = [[0] * len(STATUS_NAMES) for _ in range(size)]
        self.requests = [0] * size
        self.latencies = [[] for _ in range(size)]
        self.intended = [[] for _ in range(size)]
        self.histograms = [new_histogram() for _ in range(size)]
        self.intended_histograms = [new_histogram() for _ in range(size)]

    def rows(self) -> int:
        return sum(sum(row) for row in self.counts)

    def errors(self) -> int:
        return sum(row[STATUS_INDEX[name]] for row in self.counts for name in ERROR_STATUSES)

    def fold(self, start_s: float, end_s: float) -> None:
        """Move the values since the last fold into the histograms; one point of the per-second series."""
        interval = new_histogram()
        requests = 0
        for slot, chunks in enumerate(self.latencies):
            values = _joined(chunks)
            found = value_counts(values)
            add_counts(self.histograms[slot], found)
            add_counts(interval, found)
            requests += len(values)
            add_values(self.intended_histograms[slot], _joined(self.intended[slot]))
            self.latencies[slot] = []
            self.intended[slot] = []
        if self.lateness:
            add_values(self.lateness_histogram, self.lateness)
            self.lateness = []
        rows, errors = self.rows(), self.errors()
        point = SeriesPoint(start_s=round(start_s, 3), end_s=round(end_s, 3), ops=rows - self._rows_folded,
                            requests=requests, errors=errors - self._errors_folded)
        self._rows_folded, self._errors_folded = rows, errors
        self.series.append(point)
        self.intervals.append(interval.encode())

    def snapshot(self) -> MeterSnapshot:
        return MeterSnapshot(
            commands=self.commands, counts=self.counts, requests=self.requests,
            histograms=[h.encode() for h in self.histograms],
            intended_histograms=[h.encode() for h in self.intended_histograms],
            lateness=self.lateness_histogram.encode(), series=self.series, intervals=self.intervals,
            unexpected_replies=self.unexpected_replies, reconnects=self.reconnects, cpu_s=self.cpu_s,
            cpu_system_s=self.cpu_system_s)


@dataclass
class Totals:
    """Measurements merged over workers, by command name."""

    counts: dict[str, list[int]] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    histograms: dict[str, HdrHistogram] = field(default_factory=dict)
    intended_histograms: dict[str, HdrHistogram] = field(default_factory=dict)
    lateness: HdrHistogram = field(default_factory=new_histogram)
    series: list[SeriesPoint] = field(default_factory=list)
    intervals: list[HdrHistogram] = field(default_factory=list)  # one per series point, all commands
    unexpected_replies: int = 0
    reconnects: int = 0
    cpu_s: float = 0.0
    cpu_system_s: float = 0.0

    def merge(self, snapshot: MeterSnapshot) -> None:
        for slot, name in enumerate(snapshot.commands):
            counts = self.counts.setdefault(name, [0] * len(STATUS_NAMES))
            for index, count in enumerate(snapshot.counts[slot]):
                counts[index] += count
            self.requests[name] = self.requests.get(name, 0) + snapshot.requests[slot]
            self.histograms.setdefault(name, new_histogram()).decode_and_add(snapshot.histograms[slot])
            self.intended_histograms.setdefault(name, new_histogram()).decode_and_add(
                snapshot.intended_histograms[slot])
        self.lateness.decode_and_add(snapshot.lateness)
        # Workers tick on their own, so their n-th seconds line up only within a tick: merged by position.
        for index, (point, encoded) in enumerate(zip(snapshot.series, snapshot.intervals, strict=True)):
            if index >= len(self.series):
                self.series.append(replace(point))
                self.intervals.append(new_histogram())
            else:
                self.series[index].add(point)
            self.intervals[index].decode_and_add(encoded)
        self.unexpected_replies += snapshot.unexpected_replies
        self.reconnects += snapshot.reconnects
        self.cpu_s += snapshot.cpu_s
        self.cpu_system_s += snapshot.cpu_system_s

    def series_with_latency(self) -> list[dict[str, Any]]:
        """The series as --json writes it: each point's counts and that second's latency percentiles."""
        return [{**asdict(point), **percentiles(interval)} for point, interval in zip(self.series, self.intervals,
                                                                                      strict=True)]
