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

import numpy as np
import pyarrow as pa

from membench.analyze.connections import ConnectionCollector
from membench.analyze.counting import Codes, KeyCounter, SecondCounts
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
from membench.protocol.events import RETRIEVAL_COMMANDS, STORAGE_COMMANDS

COLUMNS = ("timestamp_ns", "connection", "command", "protocol", "key_hash", "key_length", "value_length", "ttl",
           "status", "latency_us", "batch", "quiet")
HOTTEST_LISTED = 10
_NS_PER_S = 1_000_000_000


def analyze_profile(reader: ProfileReader) -> AnalysisReport:
    accumulator = _Accumulator(reader.num_rows, SeriesCollector(reader.metadata.start_ns, reader.metadata.end_ns))
    for batch in _read_ahead(reader.batches(COLUMNS)):
        accumulator.add(batch)
    return accumulator.report(reader)


def _read_ahead(batches: Iterator[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """Decodes the next batches in a thread while this one is counted: both Parquet and numpy release the GIL."""
    ready: queue.Queue[pa.RecordBatch | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                ready.put(batch)
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
    def __init__(self, expected_operations: int, series: SeriesCollector) -> None:
        self.misses = MissRatioCollector(expected_operations)
        self.series = series
        self.ttl = TtlCollector()
        self.commands = Codes()
        self.statuses = Codes()
        self.protocols = Codes()
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

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self.operations += batch.num_rows
        command = self.commands.of(batch.column("command"))
        status = self.statuses.of(batch.column("status"))
        _add_counts(self.protocol_operations, np.bincount(self.protocols.of(batch.column("protocol"))))
        self._count_commands(command, status, _filled(batch.column("quiet"), False))
        self._count_latency(command, batch.column("latency_us"))
        self._count_sizes(command, status, batch)
        hashes = batch.column("key_hash")
        self.keys.add(hashes.drop_null() if hashes.null_count else hashes)
        self._count_time_and_requests(batch)
        self.misses.add(batch)
        self.ttl.add(batch.column("ttl"))

    def _count_commands(self, command: np.ndarray, status: np.ndarray, quiet: np.ndarray) -> None:
        width = len(self.statuses.names)
        pairs = np.bincount(command * width + status)
        for pair in np.flatnonzero(pairs):
            key = (int(pair) // width, int(pair) % width)
            self.command_status[key] = self.command_status.get(key, 0) + int(pairs[pair])
        _add_counts(self.quiet, np.bincount(command[quiet]))

    def _count_latency(self, command: np.ndarray, column: pa.Array) -> None:
        answered = _valid(column)
        latency = _filled(column, 0)
        self.latency_all.add(latency[answered])
        for code in np.flatnonzero(np.bincount(command)):
            rows = command == code
            self.latency.setdefault(int(code), CountHistogram()).add(latency[rows & answered])
            unanswered = int(np.count_nonzero(rows & ~answered))
            self.without_reply[int(code)] = self.without_reply.get(int(code), 0) + unanswered

    def _count_sizes(self, command: np.ndarray, status: np.ndarray, batch: pa.RecordBatch) -> None:
        key_length = batch.column("key_length")
        self.key_size.add(_filled(key_length, 0)[_valid(key_length)])
        value_length = batch.column("value_length")
        has_value = _valid(value_length)
        sizes = _filled(value_length, 0)
        storage = [self.commands.code(str(name)) for name in STORAGE_COMMANDS]
        stored = np.isin(command, storage)
        hit = status == self.statuses.code(str(Status.HIT))
        self.stored_size.add(sizes[has_value & stored])
        self.hit_size.add(sizes[has_value & hit])
        miss = status == self.statuses.code(str(Status.MISS))
        self.series.add(batch, hit, miss, stored)
        latency = batch.column("latency_us")
        self.connections.add(batch.column("connection").to_numpy(), batch.column("timestamp_ns").to_numpy(), hit,
                             miss, np.where(hit, sizes, 0), np.where(stored, sizes, 0), _filled(latency, 0),
                             _valid(latency))

    def _count_time_and_requests(self, batch: pa.RecordBatch) -> None:
        timestamps = batch.column("timestamp_ns").to_numpy()
        low, high = int(timestamps.min()), int(timestamps.max())
        self.first_ns = low if self.first_ns is None else min(self.first_ns, low)
        self.last_ns = high if self.last_ns is None else max(self.last_ns, high)
        self.seconds.add(timestamps)
        # The operations of one request (a multi-key get) are written together and share its number.
        numbers = batch.column("batch").to_numpy()
        self.requests += int(np.count_nonzero(numbers[1:] != numbers[:-1]))
        self.requests += int(self.last_batch is None or int(numbers[0]) != self.last_batch)
        self.last_batch = int(numbers[-1])

    def report(self, reader: ProfileReader) -> AnalysisReport:
        metadata = reader.metadata
        duration_s = ((self.last_ns - self.first_ns) / _NS_PER_S
                      if self.first_ns is not None and self.last_ns is not None else 0.0)
        health = _health(metadata)
        hashes, counts = self.keys.counts()  # merged once: key stats and popularity share them
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
            miss_ratio_curve=self.misses.curve(),
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
        counts = self.seconds.counts
        if counts.size == 0:
            return Throughput(0, 0, None, None, None, None, None)
        peak = int(np.argmax(counts))
        full = counts[1:-1]
        quietest = int(np.argmin(full)) + 1 if full.size else None
        duration_s = (self.last_ns - self.first_ns) / _NS_PER_S if self.first_ns is not None else 0
        return Throughput(
            seconds=int(counts.size), full_seconds=int(full.size),
            mean_ops_per_s=self.operations / duration_s if duration_s > 0 else None,
            peak_ops=int(counts[peak]), peak_offset_s=peak,
            min_ops=int(counts[quietest]) if quietest is not None else None, min_offset_s=quietest,
        )


def _add_counts(totals: dict[int, int], counts: np.ndarray) -> None:
    """Adds a bincount's nonzero entries to running totals keyed by code."""
    for code in np.flatnonzero(counts):
        totals[int(code)] = totals.get(int(code), 0) + int(counts[code])


def _valid(column: pa.Array) -> np.ndarray:
    if column.null_count == 0:
        return np.ones(len(column), dtype=bool)
    return column.is_valid().to_numpy(zero_copy_only=False)


def _filled(column: pa.Array, fill: int | bool) -> np.ndarray:
    if column.null_count:
        column = column.fill_null(fill)
    return column.to_numpy(zero_copy_only=False)


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

