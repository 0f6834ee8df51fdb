"""`membench replay --cluster`: the one-machine engine on Ray actors, one per CPU of every node of a Ray cluster.

The recorded connections are sharded over the actors as over local workers (a connection lives on one actor, so
its order is kept; the cross-connection order of the replay holds within an actor, not across actors). Every actor
reads the profile at the driver's path (or a copy shipped to its node where that path is missing: shipping.py),
plans its shard, connects, and starts at one wall-clock instant set once all are ready (the barrier; nodes'
clocks are assumed NTP-synchronized). The driver polls their per-second figures for the progress line, and
merges their measurements as local workers' are merged: counts added, HDR histograms decoded and added
(lossless). Ray is an optional extra: `pip install 'membench[cluster]'`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

import uvloop

from membench.errors import MembenchError
from membench.profile.reader import ProfileReader
from membench.replay.ketama import Continuum
from membench.replay.keys import KeySynthesizer
from membench.replay.options import ReplayOptions
from membench.replay.plan import SLICE_ROWS, Planner
from membench.replay.runner import MergedRuns, Runner, RunOutcome
from membench.replay.shipping import ShippedProfile, materialize, remove_copies, ship_where_missing
from membench.replay.stats import Meter
from membench.replay.survey import Survey

_START_AHEAD_S = 0.5  # the common start lies this far after the last actor is ready: time to connect
_POLL_S = 0.2
_CONNECT_TIMEOUT_S = 5.0
_CLIENT_ATTEMPTS = 3
_CLIENT_STARTUP_FAILED = "Initialization failure from server"


@dataclass
class ClusterRun:
    """How the replay was spread over the cluster."""

    address: str
    nodes: int
    actors: int
    start_skew_ms: float  # latest minus earliest actual start of the actors' replays
    niceness: int  # the highest niceness an actor's replay ran at (Ray starts workers at 15; 0 where undone)

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "nodes": self.nodes, "actors": self.actors,
                "start_skew_ms": self.start_skew_ms, "niceness": self.niceness}


@dataclass
class ShardResult:
    """What one actor sends back."""

    node: str
    outcome: RunOutcome
    began_wall_ns: int
    niceness: int


class ReplayShard:
    """One actor: the local engine on shard `index` of `count` (made a Ray actor class by `run_on_cluster`).

    The engine runs in a child process of the actor, not in one of its threads: Ray's own threads in the actor take
    the GIL now and then, and on a busy machine each handover stalled the replay until the other thread was
    scheduled (13% of an actor's samples waited for the GIL, mid-planning)."""

    def __init__(self, profile: str, shipped: ShippedProfile | None,
                 plan: tuple[Survey, ReplayOptions, Continuum, KeySynthesizer], index: int, count: int) -> None:
        if not Path(profile).exists():
            if shipped is None:
                raise MembenchError(f"the profile {profile} is not on this node")
            import ray

            profile = str(materialize(ray, shipped))
        # Forked, so the child has the plan's inputs as they are; it calls nothing of Ray's.
        context = multiprocessing.get_context("fork")
        self._channel, child_end = context.Pipe()
        self._process = context.Process(target=_shard_process, args=(profile, plan, index, count, child_end),
                                        daemon=True)
        self._process.start()
        child_end.close()
        self._niceness = self._receive()[1]  # ready: its plan is built
        self._tick = (0.0, 0, 0)

    def node(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def run(self, start_wall_ns: int) -> ShardResult:
        start_ns = time.perf_counter_ns() + (start_wall_ns - time.time_ns())
        self._channel.send(start_ns)
        while True:
            message = self._receive()
            if message[0] == "tick":
                self._tick = message[1:]
                continue
            outcome: RunOutcome = message[1]
            self._process.join()
            return ShardResult(node=self.node(), outcome=outcome,
                               began_wall_ns=start_wall_ns + (outcome.began_ns - start_ns), niceness=self._niceness)

    def progress(self) -> tuple[float, int, int]:
        return self._tick

    def stop(self) -> None:
        if self._process.pid is not None and self._process.is_alive():
            os.kill(self._process.pid, signal.SIGINT)

    def _receive(self) -> tuple[Any, ...]:
        try:
            message: tuple[Any, ...] = self._channel.recv()
        except EOFError:
            raise MembenchError(f"a replay process died (exit code {self._process.exitcode})") from None
        if message[0] == "error":
            raise MembenchError(message[1])
        return message


def _shard_process(profile: str, plan: tuple[Survey, ReplayOptions, Continuum, KeySynthesizer], index: int,
                   count: int, channel: Connection) -> None:
    """The engine of one actor: plans, says it is ready, starts at the instant it is sent, reports once a second."""
    # The actor forwards Ctrl+C; until the event loop takes SIGINT over, the default handler must not kill us. The
    # Ray thread that forked us blocks signals (they are for the actor's main thread): the child takes them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    niceness = _unniced()
    try:
        survey, options, continuum, keys = plan
        reader = ProfileReader(Path(profile))

        def tick(elapsed_s: float, meter: Meter) -> None:
            channel.send(("tick", elapsed_s, meter.rows(), meter.errors()))

        runner = Runner(Planner(survey, options, continuum, keys, index, count),
                        lambda: reader.batches(batch_size=SLICE_ROWS * 16), options, tick)
        channel.send(("ready", niceness))
        start_ns = channel.recv()

        async def main() -> None:
            loop = asyncio.get_running_loop()

            def actor_gone() -> None:
                loop.remove_reader(channel.fileno())
                runner.stop()

            # The actor sends nothing more: the pipe turns readable only when the actor is gone (killed).
            loop.add_reader(channel.fileno(), actor_gone)
            await runner.run(start_ns)

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
            loop_runner.run(main())
        channel.send(("done", runner.outcome()))
    except MembenchError as error:
        channel.send(("error", str(error)))
    except (EOFError, BrokenPipeError):
        pass  # the actor is gone: nobody to report to


def _unniced() -> int:
    """Ray starts its workers at niceness 15, so that anything else on a node runs first: a load generator's
    latencies would then include its waits for the CPU. Back to 0 where allowed (root, CAP_SYS_NICE); the niceness
    it runs at is reported either way."""
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    return os.getpriority(os.PRIO_PROCESS, 0)


def connect(address: str) -> Any:
    """The ray module, connected to the cluster at `address` (ray://HOST:PORT, HOST:PORT or auto)."""
    try:
        import ray
    except ImportError:
        raise MembenchError("--cluster needs Ray: pip install 'membench[cluster]'") from None
    if ray.is_initialized():
        return ray
    _check_reachable(address)
    for attempt in range(_CLIENT_ATTEMPTS):
        try:
            ray.init(address=address, logging_level="error", log_to_driver=False)
            return ray
        except (ConnectionError, RuntimeError, ValueError) as error:
            # The head's Ray Client proxy sometimes fails to start the server it forks for a new client (seen
            # here about once in ten connections, with "Initialization failure from server"); a retry gets another.
            if _CLIENT_STARTUP_FAILED not in str(error) or attempt == _CLIENT_ATTEMPTS - 1:
                message = str(error).strip().splitlines()[0]
                raise MembenchError(f"cannot connect to the Ray cluster at {address}: {message}") from None
            time.sleep(1)
    return ray


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes, where nothing listens: Ray itself retries an unreachable head for long."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise MembenchError(f"--cluster takes ray://HOST:PORT, HOST:PORT or auto, not {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise MembenchError(f"cannot connect to the Ray cluster at {address}: {error.strerror or error}") from None


def run_on_cluster(profile: Path, survey: Survey, options: ReplayOptions, continuum: Continuum,
                   keys: KeySynthesizer, progress: Any) -> tuple[MergedRuns, ClusterRun]:
    assert options.cluster is not None
    ray = connect(options.cluster)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) >= 1]
    if not nodes:
        raise MembenchError(f"the Ray cluster at {options.cluster} has no node with a CPU to replay on")
    placements = [node["NodeID"] for node in nodes for _ in range(int(node["Resources"]["CPU"]))]
    shard_class = ray.remote(num_cpus=1, max_concurrency=2)(ReplayShard)
    plan = ray.put((survey, options, continuum, keys))  # sent once, not once per actor
    node_ids = [node["NodeID"] for node in nodes]
    try:
        shipped = ship_where_missing(ray, profile.resolve(), node_ids)
    except (OSError, ray.exceptions.RayError) as error:
        message = str(error).strip().splitlines()[0]
        raise MembenchError(f"cannot send the profile to the nodes that lack it: {message}") from None
    actors = [shard_class.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(
        str(profile.resolve()), shipped, plan, index, len(placements)) for index, node_id in enumerate(placements)]
    try:
        _get(ray, [actor.node.remote() for actor in actors])  # the barrier: every actor built, its plan ready
        start_wall_ns = time.time_ns() + int(_START_AHEAD_S * 1e9)
        results = _wait(ray, actors, [actor.run.remote(start_wall_ns) for actor in actors], progress)
    finally:
        for actor in actors:
            ray.kill(actor)
        if shipped is not None:
            remove_copies(ray, shipped, node_ids)
    began = [result.began_wall_ns for result in results]
    run = ClusterRun(address=options.cluster, nodes=len({result.node for result in results}), actors=len(actors),
                     start_skew_ms=round((max(began) - min(began)) / 1e6, 3),
                     niceness=max(result.niceness for result in results))
    return MergedRuns.of([result.outcome for result in results]), run


def _wait(ray: Any, actors: list[Any], pending: list[Any], progress: Any) -> list[ShardResult]:
    """The actors' results, showing their progress meanwhile; Ctrl+C stops them all, and what they did counts."""
    stop = threading.Event()

    def on_interrupt(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    stopped = False
    try:
        while True:
            done, _ = ray.wait(pending, num_returns=len(pending), timeout=_POLL_S)
            if len(done) == len(pending):
                return list(_get(ray, pending))
            if stop.is_set() and not stopped:
                stopped = True
                _get(ray, [actor.stop.remote() for actor in actors])
            if progress is not None:
                ticks = _get(ray, [actor.progress.remote() for actor in actors])
                progress.update(max(t[0] for t in ticks), sum(t[1] for t in ticks), sum(t[2] for t in ticks))
    finally:
        signal.signal(signal.SIGINT, previous)


_ERROR_MARK = f"{MembenchError.__module__}.{MembenchError.__name__}: "


def _get(ray: Any, refs: list[Any]) -> list[Any]:
    """ray.get, with an actor's MembenchError passed on as the one-line error it is."""
    try:
        return list(ray.get(refs))
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as error:
        text = str(error)
        if _ERROR_MARK in text:
            raise MembenchError(text.rsplit(_ERROR_MARK, 1)[1].strip().splitlines()[0]) from None
        raise MembenchError(f"a replay actor failed: {text.strip().splitlines()[0]}") from None
