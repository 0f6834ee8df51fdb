"""What a user can ask of `membench replay`: the options dataclass and its command-line arguments."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from membench.argtypes import count_up_to, nonempty_path, positive_float, positive_int
from membench.errors import MembenchError
from membench.outputs import check_writable
from membench.protocol.events import Protocol
from membench.replay.ketama import Distribution

# Each replay connection is a socket and each worker a process: past these, a count is a typo that would exhaust the
# machine (a million sockets, or a fork per connection of any profile) before failing.
MAX_CONNECTIONS = 1_000_000
MAX_WORKERS = 256

DEFAULT_TARGET = "127.0.0.1:11211"


class Timing(StrEnum):
    # Each connection as fast as its order and pipelining allow (closed loop), keeping across connections the
    # recorded order of the requests on each key and around flush_all (replay/order.py).
    ASAP = "asap"
    ORIGINAL = "original"  # recorded send times, scaled by speed (open loop)
    RATE = "rate"  # a fixed aggregate request rate, requests in recorded order (open loop)


@dataclass
class ReplayOptions:
    targets: list[str] = field(default_factory=lambda: [DEFAULT_TARGET])
    protocol: Protocol | None = None  # None: each connection speaks the protocol it was recorded with
    timing: Timing = Timing.ASAP
    speed: float = 1.0
    rate: float | None = None  # requests per second overall, with timing RATE
    connections: int | None = None  # fold the recorded connections onto this many, or spread them over more
    pipeline: int | None = None  # fixed requests in flight per connection; None: as recorded
    warm: bool = True
    loops: int | None = 1  # None: loop until interrupted (or until `duration`)
    duration: float | None = None  # seconds after which the replay ends, complete (memtier's --test-time)
    workers: int = 1
    cluster: str | None = None  # a Ray cluster (ray://HOST:PORT, HOST:PORT or auto): one actor per CPU of each node
    timeout: float = 5.0  # seconds a reply may take before the request counts as timed out
    reconnect_timeout: float = 10.0  # give up on a server that stays unreachable this long mid-run
    distribution: Distribution = Distribution.KETAMA
    json_path: Path | None = None
    hdr_log_path: Path | None = None
    memtier_json_path: Path | None = None  # the result again, in memtier_benchmark's JSON shape
    progress: bool = True
    # Failed operations (lost, timed out, server errors the recording did not have, garbage replies) above this
    # share of all make the replay a failure: a result over a broken target must not pass for a measurement.
    max_error_ratio: float = 0.01
    # Under asap, keep the recorded order between connections on each key (True), or only within each connection:
    # about 10% less client CPU per operation, for pure load where the hit ratio need not match.
    key_order: bool = True

    def __post_init__(self) -> None:
        # Plain strings are accepted for the enums, as a caller writing ReplayOptions(protocol="meta") expects.
        if self.protocol is not None:
            self.protocol = Protocol(self.protocol)
        self.timing = Timing(self.timing)
        self.distribution = Distribution(self.distribution)
        if not self.targets:
            raise MembenchError("replay needs at least one --target")
        for name, value in (("--speed", self.speed), ("--timeout", self.timeout)):
            if value <= 0:
                raise MembenchError(f"{name} must be positive, not {value}")
        if self.duration is not None and self.duration <= 0:
            raise MembenchError(f"--duration must be positive, not {self.duration}")
        if self.rate is not None and self.rate <= 0:
            raise MembenchError(f"--rate must be positive, not {self.rate}")
        if self.timing is Timing.RATE and self.rate is None:
            raise MembenchError("timing 'rate' needs --rate N")
        for name, count in (("--connections", self.connections), ("--pipeline", self.pipeline),
                            ("--workers", self.workers), ("--loop", self.loops)):
            if count is not None and count < 1:
                raise MembenchError(f"{name} must be at least 1, not {count}")
        if self.cluster is not None and self.workers != 1:
            raise MembenchError("--workers is for one machine: --cluster runs one actor per CPU of every node")
        if not 0 <= self.max_error_ratio <= 1:
            raise MembenchError(f"--max-error-ratio must be between 0 and 1, not {self.max_error_ratio}")
        check_writable(self.json_path, "--json")
        check_writable(self.hdr_log_path, "--hdr-log")
        check_writable(self.memtier_json_path, "--memtier-json")


def _loops(text: str) -> int | None:
    if text == "forever":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive count or 'forever', not {text!r}")
    return int(text)


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("profile", type=nonempty_path, help="the profile directory written by `membench record`")
    parser.add_argument("--target", action="append", metavar="HOST:PORT|unix:PATH", dest="targets",
                        help=f"a memcached server, on TCP or a unix socket (repeat for several: keys are spread "
                             f"with libmemcached's ketama); default {DEFAULT_TARGET}")
    parser.add_argument("--protocol", choices=[p.value for p in Protocol],
                        help="speak this protocol on every connection (default: what each connection was "
                             "recorded with)")
    parser.add_argument("--timing", choices=[Timing.ASAP.value, Timing.ORIGINAL.value], default=Timing.ASAP.value,
                        help="asap: as fast as the recorded order allows (default): a request waits only for "
                             "the requests on its keys (or a flush_all) that the server handled before it on "
                             "other connections; original: the recorded send times, scaled by --speed")
    parser.add_argument("--order", choices=["key", "connection"], default="key",
                        help="asap: keep the recorded order per key across connections (default), or only within "
                             "each connection (a little faster; hit ratios may then differ from the recording's)")
    parser.add_argument("--speed", type=positive_float, default=1.0, metavar="X",
                        help="with --timing original, play X times faster (default 1)")
    parser.add_argument("--rate", type=positive_float, metavar="N",
                        help="open loop at N requests per second overall, in recorded order")
    parser.add_argument("--connections", type=count_up_to(MAX_CONNECTIONS, "connections"), metavar="N",
                        help="fold the recorded connections onto N (or spread them over N, by key)")
    parser.add_argument("--pipeline", type=positive_int, metavar="N",
                        help="keep up to N requests in flight per connection (default: as recorded)")
    parser.add_argument("--warm", action=argparse.BooleanOptionalAction, default=True,
                        help="first store the keys the recording found present, so hit ratios can match "
                             "(default on)")
    parser.add_argument("--loop", type=_loops, default=argparse.SUPPRESS, dest="loops", metavar="N|forever",
                        help="replay the profile N times, or until Ctrl+C (default 1; with --duration, forever)")
    parser.add_argument("--duration", type=positive_float, metavar="SECONDS",
                        help="end after this many seconds, replaying the profile as many times as that takes "
                             "(with --loop N: whichever comes first)")
    parser.add_argument("--workers", type=count_up_to(MAX_WORKERS, "worker processes"), default=1, metavar="N",
                        help="split the connections over N processes (default 1)")
    parser.add_argument("--cluster", metavar="ray://HOST:PORT|auto",
                        help="replay from every node of a Ray cluster, one actor per CPU; nodes without the "
                             "profile at its path are sent it (needs membench[cluster])")
    parser.add_argument("--timeout", type=positive_float, default=5.0, metavar="SECONDS",
                        help="a reply later than this counts as a timeout and the connection is reopened "
                             "(default 5)")
    parser.add_argument("--distribution", choices=[d.value for d in Distribution], default=Distribution.KETAMA,
                        help="key distribution over several targets: ketama (pylibmc {'ketama': True}, the "
                             "default) or ketama_weighted (MD5, 160 points per server)")
    parser.add_argument("--json", type=nonempty_path, metavar="FILE", dest="json_path",
                        help="write every figure of the run as JSON")
    parser.add_argument("--hdr-log", type=nonempty_path, metavar="FILE", dest="hdr_log_path",
                        help="write per-second latency histograms in the HdrHistogram interval log format")
    parser.add_argument("--memtier-json", type=nonempty_path, metavar="FILE", dest="memtier_json_path",
                        help="also write the result in memtier_benchmark's JSON shape (ALL STATS: Gets, Sets, "
                             "Totals with a per-second Time-Serie; latencies in ms), for dashboards that read it")
    parser.add_argument("--max-error-ratio", type=float, default=0.01, metavar="R",
                        help="fail (exit 1) when more than this share of the operations failed: lost, timed out, "
                             "server errors the recording did not have (default 0.01)")
    parser.add_argument("--no-progress", action="store_false", dest="progress",
                        help="no live progress line")


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    timing = Timing(args.timing)
    if args.rate is not None:
        if timing is Timing.ORIGINAL:
            raise MembenchError("--rate and --timing original exclude each other")
        timing = Timing.RATE
    return ReplayOptions(
        targets=args.targets or [DEFAULT_TARGET],
        protocol=Protocol(args.protocol) if args.protocol else None,
        timing=timing,
        speed=args.speed,
        rate=args.rate,
        connections=args.connections,
        pipeline=args.pipeline,
        warm=args.warm,
        loops=args.loops if hasattr(args, "loops") else (None if args.duration else 1),
        duration=args.duration,
        workers=args.workers,
        cluster=args.cluster,
        timeout=args.timeout,
        distribution=Distribution(args.distribution),
        json_path=args.json_path,
        hdr_log_path=args.hdr_log_path,
        memtier_json_path=args.memtier_json_path,
        progress=args.progress,
        max_error_ratio=args.max_error_ratio,
        key_order=args.order == "key",
    )
