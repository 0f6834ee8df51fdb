"""Computes an AnalysisReport from a profile in one pass over its column batches.

Every statistic is accumulated per batch with numpy or pyarrow.compute and merged across batches; Python loops only
run over things that are few (distinct commands and statuses, calendar seconds at the end), never over rows.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from membench.analyze.batch import BatchView, ColumnCodes, batch_view
from membench.analyze.connections import ConnectionCollector
from membench.analyze.counting import KeyCounter, SecondCounts
from membench.analyze.histogram import CountHistogram
from membench.analyze.mrc import MissRatioCollector
from membench.analyze.popularity import popularity
from membench.analyze.report import (
    AnalysisReport,
    CaptureHealth,
    CommandStats,
    HitRatio,
    HotKey,
    KeyStats,
    Latency,
    ProfileSummary,
    Throughput,
    ValueSizes,
)
from membench.analyze.series import SeriesCollector
from membench.analyze.ttl import TtlCollector
from membench.profile.health import losses as health_losses
from membench.profile.metadata import ProfileMetadata
from membench.profile.reader import ProfileReader
from membench.profile.schema import Status
from membench.protocol.events import RETRIEVAL_COMMANDS

COLUMNS = ("timestamp_ns", "connection", "command", "protocol", "key_hash", "key_length", "value_length", "ttl",
           "status", "latency_us", "batch", "quiet")
HOTTEST_LISTED = 10
_NS_PER_S = 1_000_000_000


def analyze_profile(reader: ProfileReader) -> AnalysisReport:
    codes = ColumnCodes()
    accumulator = _Accumulator(reader.num_rows, SeriesCollector(reader.metadata.start_ns, reader.metadata.end_ns),
                               codes)
    for view in _read_ahead(reader.batches(COLUMNS), codes):
        accumulator.add(view)
    return accumulator.report(reader)


def _read_ahead(batches: Iterator[pa.RecordBatch], codes: ColumnCodes, depth: int = 2) -> Iterator[BatchView]:
    """Decodes the next batches and builds their views in a thread while this one is counted: Parquet, pyarrow
    and numpy release the GIL, so the two share the work on two cores."""
    ready: queue.Queue[BatchView | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                if batch.num_rows:
                    ready.put(batch_view(batch, codes))
            ready.put(None)
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            ready.put(exc)

    producer = threading.Thread(target=produce, name="membench-analyze-read", daemon=True)
    producer.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while producer.is_alive():
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.05)


class _Accumulator:
    def __init__(self, expected_operations: int, series: SeriesCollector, codes: ColumnCodes) -> None:
        self.misses = MissRatioCollector(expected_operations)
        self.series = series
        self.ttl = TtlCollector()
        self.commands = codes.commands
        self.statuses = codes.statuses
        self.protocols = codes.protocols
        self.command_status: dict[tuple[int, int], int] = {}
        self.protocol_operations: dict[int, int] = {}
        self.quiet: dict[int, int] = {}
        self.latency: dict[int, CountHistogram] = {}
        self.latency_all = CountHistogram()
        self.without_reply: dict[int, int] = {}
        self.key_size = CountHistogram()
        self.stored_size = CountHistogram()
        self.hit_size = CountHistogram()
        self.keys = KeyCounter()
        self.connections = ConnectionCollector()
        self.seconds = SecondCounts()
        self.operations = 0
        self.requests = 0
        self.last_batch: int | None = None
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    def add(self, view: BatchView) -> None:
        self.operations += len(view.timestamps)
        _add_counts(self.protocol_operations, np.bincount(view.protocol))
        self._count_commands(view.command, view.status, view.quiet)
        self._count_latency(view)
        self.key_size.add(_present(view.batch.column("key_length")))
        self.stored_size.add(view.value_length[view.has_value & view.stored])
        self.hit_size.add(view.value_length[view.has_value & view.hit])
        self.series.add(view)
        self.connections.add(view)
        self.keys.add(view.key_counts)
        self._count_time_and_requests(view)
        self.misses.add(view)
        self.ttl.add(view.batch.column("ttl"))

    def _count_commands(self, command: np.ndarray, status: np.ndarray, quiet: np.ndarray) -> None:
        width = len(self.statuses.names)
        pairs = np.bincount(command * width + status)
        for pair in np.flatnonzero(pairs):
            key = (int(pair) // width, int(pair) % width)
            self.command_status[key] = self.command_status.get(key, 0) + int(pairs[pair])
        _add_counts(self.quiet, np.bincount(command[quiet]))

    def _count_latency(self, view: BatchView) -> None:
        answered = view.answered.all()
        self.latency_all.add(view.latency_us if answered else view.latency_us[view.answered])
        for code in np.flatnonzero(np.bincount(view.command)):
            rows = view.command == code
            self.latency.setdefault(int(code), CountHistogram()).add(view.latency_us[rows & view.answered])
            unanswered = int(np.count_nonzero(rows & ~view.answered))
            self.without_reply[int(code)] = self.without_reply.get(int(code), 0) + unanswered

    def _count_time_and_requests(self, view: BatchView) -> None:
        timestamps = view.timestamps
        low, high = int(timestamps.min()), int(timestamps.max())
        self.first_ns = low if self.first_ns is None else min(self.first_ns, low)
        self.last_ns = high if self.last_ns is None else max(self.last_ns, high)
        self.seconds.add(timestamps)
        # The operations of one request (a multi-key get) are written together and share its number.
        numbers = view.batch.column("batch").to_numpy()
        self.requests += int(np.count_nonzero(numbers[1:] != numbers[:-1]))
        self.requests += int(self.last_batch is None or int(numbers[0]) != self.last_batch)
        self.last_batch = int(numbers[-1])

    def report(self, reader: ProfileReader) -> AnalysisReport:
        metadata = reader.metadata
        duration_s = ((self.last_ns - self.first_ns) / _NS_PER_S
                      if self.first_ns is not None and self.last_ns is not None else 0.0)
        health = _health(metadata)
        # The curve (sorting and simulating the key sample, GIL released) runs beside the key-count merge.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="membench-analyze-mrc") as pool:
            curve = pool.submit(self.misses.curve)
            hashes, counts = self.keys.counts()  # merged once: key stats and popularity share them
            miss_ratio_curve = curve.result()
        report = AnalysisReport(
            profile=ProfileSummary(
                path=str(reader.path), source=metadata.source, ports=list(metadata.ports),
                created=metadata.created, salt_fingerprint=metadata.salt_fingerprint,
                schema_version=metadata.schema_version, membench_version=metadata.membench_version,
                complete=metadata.complete, start_ns=self.first_ns, end_ns=self.last_ns),
            operations=self.operations,
            requests=self.requests,
            duration_s=duration_s,
            ops_per_s=self.operations / duration_s if duration_s > 0 else None,
            connections=self.connections.connections(),
            protocols={self.protocols.names[code]: count for code, count in
                       sorted(self.protocol_operations.items(), key=lambda item: (-item[1], item[0]))},
            commands=self._command_stats(),
            hit_ratios=self._hit_ratios(),
            keys=self._key_stats(hashes, counts),
            value_sizes=ValueSizes(stored=self.stored_size.distribution(), hit=self.hit_size.distribution(),
                                   stored_histogram=self.stored_size.power_of_two_buckets(),
                                   hit_histogram=self.hit_size.power_of_two_buckets()),
            latency=self._latencies(),
            throughput=self._throughput(),
            health=health,
            miss_ratio_curve=miss_ratio_curve,
            popularity=popularity(counts),
            series=self.series.series(),
            ttl=self.ttl.stats(),
            working_set=self.misses.working_set(self.series.start_ns, self.series.window_s, self.series.windows),
        )
        report.warnings = _warnings(report, reader.problems)
        return report

    def _command_stats(self) -> list[CommandStats]:
        per_command: dict[int, dict[str, int]] = {}
        for (command, status), count in self.command_status.items():
            per_command.setdefault(command, {})[self.statuses.names[status]] = count
        stats = [
            CommandStats(command=self.commands.names[code], operations=sum(statuses.values()),
                         share=sum(statuses.values()) / self.operations, quiet=self.quiet.get(code, 0),
                         statuses=dict(sorted(statuses.items(), key=lambda item: (-item[1], item[0]))))
            for code, statuses in per_command.items()
        ]
        return sorted(stats, key=lambda s: (-s.operations, s.command))

    def _hit_ratios(self) -> list[HitRatio]:
        ratios = []
        for stats in self._command_stats():
            if stats.command in RETRIEVAL_COMMANDS:
                hits = stats.statuses.get(Status.HIT, 0)
                misses = stats.statuses.get(Status.MISS, 0)
                ratios.append(_hit_ratio(stats.command, hits, misses, stats.operations - hits - misses))
        if ratios:
            ratios.append(_hit_ratio("all", sum(r.hits for r in ratios), sum(r.misses for r in ratios),
                                     sum(r.other for r in ratios)))
        return ratios

    def _key_stats(self, hashes: np.ndarray, counts: np.ndarray) -> KeyStats:
        keyed = int(counts.sum())
        distinct = int(counts.size)
        listed = min(HOTTEST_LISTED, distinct)
        top = np.argpartition(counts, distinct - listed)[distinct - listed:] if listed else np.zeros(0, np.intp)
        top = top[np.lexsort((hashes[top], -counts[top]))]
        return KeyStats(
            keyed_operations=keyed,
            distinct_keys=distinct,
            hottest_0_1pct_share=_top_share(counts, 0.001, keyed),
            hottest_1pct_share=_top_share(counts, 0.01, keyed),
            hottest_10pct_share=_top_share(counts, 0.10, keyed),
            hottest=[HotKey(f"{int(hashes[i]):016x}", int(counts[i]), int(counts[i]) / keyed) for i in top],
            key_size=self.key_size.distribution(),
            key_size_histogram=self.key_size.power_of_two_buckets(),
        )

    def _latencies(self) -> list[Latency]:
        by_command = sorted(self.latency.items(), key=lambda item: self.commands.names[item[0]])
        latencies = [Latency(self.commands.names[code], histogram.distribution(), self.without_reply.get(code, 0))
                     for code, histogram in by_command]
        latencies.append(Latency("all", self.latency_all.distribution(), sum(self.without_reply.values())))
        return latencies

    def _throughput(self) -> Throughput:
        extremes = self.seconds.extremes()
        if extremes is None:
            return Throughput(0, 0, None, None, None, None, None)
        duration_s = (self.last_ns - self.first_ns) / _NS_PER_S if self.first_ns is not None else 0
        return Throughput(
            seconds=extremes.seconds, full_seconds=max(extremes.seconds - 2, 0),
            mean_ops_per_s=self.operations / duration_s if duration_s > 0 else None,
            peak_ops=extremes.peak_ops, peak_offset_s=extremes.peak_offset_s,
            min_ops=extremes.min_ops, min_offset_s=extremes.min_offset_s,
        )


def _add_counts(totals: dict[int, int], counts: np.ndarray) -> None:
    """Adds a bincount's nonzero entries to running totals keyed by code."""
    for code in np.flatnonzero(counts):
        totals[int(code)] = totals.get(int(code), 0) + int(counts[code])


def _present(column: pa.Array) -> np.ndarray:
    """The column's non-null values."""
    return (column.drop_null() if column.null_count else column).to_numpy()


def _hit_ratio(command: str, hits: int, misses: int, other: int) -> HitRatio:
    return HitRatio(command, hits, misses, hits / (hits + misses) if hits + misses else None, other)


def _top_share(counts: np.ndarray, fraction: float, keyed: int) -> float | None:
    if counts.size == 0:
        return None
    take = max(1, math.ceil(counts.size * fraction))
    return int(np.partition(counts, counts.size - take)[counts.size - take:].sum()) / keyed


def _health(metadata: ProfileMetadata) -> CaptureHealth:
    losses = {f"{section}.{name}": value for (section, name), value in health_losses(metadata.health).items()}
    capture = metadata.health.get("capture", {})
    parsed = [value for name, value in metadata.health.get("parser", {}).items() if name.endswith("bytes_parsed")]
    return CaptureHealth(
        complete=metadata.complete,
        lossy=bool(losses),
        bytes_seen=capture.get("bytes_seen"),
        bytes_missing=capture.get("bytes_missing"),
        bytes_parsed=sum(parsed) if parsed else None,
        losses=losses,
        counters=metadata.health,
    )


def _warnings(report: AnalysisReport, problems: list[str]) -> list[str]:
    warnings = []
    if not report.health.complete:
        warnings.append("the profile is incomplete: its recorder did not finish (killed, crashed or still "
                        "running), so about the last second of traffic may be missing")
    if report.health.lossy:
        listed = ", ".join(f"{name}={value}" for name, value in report.health.losses.items())
        warnings.append(f"the capture lost or could not pair some traffic, so these numbers may undercount it: "
                        f"{listed}")
    if not report.health.counters:
        warnings.append("the profile carries no capture health counters: losses, if any, are unknown")
    warnings.extend(f"profile problem: {problem}" for problem in problems)
    return warnings

