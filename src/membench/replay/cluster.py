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
from membench.replay.runner import STOP_SIGNALS, MergedRuns, Runner, RunOutcome
from membench.replay.shipping import ShippedProfile, materialize, remove_copies, ship_where_missing
from membench.replay.stats import Meter
from membench.replay.survey import Survey
from membench.replay.workers import how_it_ended

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
            self._process.join(timeout=5)  # its exit status, for the message
            raise MembenchError(f"its replay process {how_it_ended(self._process.exitcode)}") from None
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
    origin = ""
    if address == "auto":
        address, found_in = _auto_address()
        origin = f" (--cluster auto, from {found_in})"
    _check_reachable(address, origin)
    for attempt in range(_CLIENT_ATTEMPTS):
        try:
            ray.init(address=address, logging_level="error", log_to_driver=False)
            return ray
        except (ConnectionError, RuntimeError, ValueError) as error:
            # The head's Ray Client proxy sometimes fails to start the server it forks for a new client (seen
            # here about once in ten connections, with "Initialization failure from server"); a retry gets another.
            if _CLIENT_STARTUP_FAILED not in str(error) or attempt == _CLIENT_ATTEMPTS - 1:
                message = str(error).strip().splitlines()[0]
                raise MembenchError(f"cannot connect to the Ray cluster at {address}{origin}: {message}") from None
            time.sleep(1)
    return ray


def _auto_address() -> tuple[str, str]:
    """The address `auto` stands for, and where it was found, looked up as ray.init looks it up: RAY_ADDRESS, else
    the head of a Ray cluster running on this machine, else the address the last `ray start --head` recorded
    (ray_current_cluster in Ray's temporary directory). That record outlives its cluster, and ray.init retries a
    dead address for minutes: resolved here, it is checked like an explicit address instead."""
    from ray._private.services import canonicalize_bootstrap_address  # what ray.init itself resolves "auto" with

    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    try:
        return canonicalize_bootstrap_address("auto"), "the last `ray start --head` on this machine"
    except ConnectionError:
        raise MembenchError("--cluster auto: no Ray cluster was started on this machine (no `ray start --head`, no "
                            "RAY_ADDRESS); name one with --cluster ray://HOST:PORT") from None
    except ValueError as error:  # a damaged record: "Invalid address format: ..."
        raise MembenchError(f"--cluster auto: the address `ray start --head` recorded on this machine is not one "
                            f"({error})") from None


def _check_reachable(address: str, origin: str) -> None:
    """Fail in seconds, not minutes, where nothing listens: Ray itself retries an unreachable head for long.
    `origin` says, for the messages, where `auto` found the address ("" for an explicit one)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise MembenchError(f"--cluster takes ray://HOST:PORT, HOST:PORT or auto, not {address!r}{origin}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise MembenchError(f"cannot connect to the Ray cluster at {address}{origin}: {error.strerror or error}"
                            ) from None


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
        results, failures = _wait(ray, actors, [actor.run.remote(start_wall_ns) for actor in actors], progress)
    finally:
        for actor in actors:
            ray.kill(actor)
        if shipped is not None:
            remove_copies(ray, shipped, node_ids)
    if not results:
        index, why = min(failures.items())
        raise MembenchError(why if len(actors) == 1 else f"replay actor {index + 1} of {len(actors)}: {why}")
    missing = [f"replay actor {index + 1} of {len(actors)} gave no result ({why}): its connections' operations are "
               "missing from the result" for index, why in sorted(failures.items())]
    began = [result.began_wall_ns for result in results]
    run = ClusterRun(address=options.cluster, nodes=len({result.node for result in results}), actors=len(actors),
                     start_skew_ms=round((max(began) - min(began)) / 1e6, 3),
                     niceness=max(result.niceness for result in results))
    return MergedRuns.of([result.outcome for result in results], missing), run


def _wait(ray: Any, actors: list[Any], pending: list[Any],
          progress: Any) -> tuple[list[ShardResult], dict[int, str]]:
    """The actors' results, and by actor why those that gave none failed, showing their progress meanwhile. Ctrl+C or
    SIGTERM stops them all, and so does the first actor that fails, so the load does not go on lopsided: what the
    others did still counts."""
    stop = threading.Event()

    def on_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {signum: signal.signal(signum, on_stop) for signum in STOP_SIGNALS}
    waiting = {ref: index for index, ref in enumerate(pending)}
    results: list[ShardResult] = []
    failures: dict[int, str] = {}
    ticks: dict[int, tuple[float, int, int]] = {}
    stopped = False
    try:
        while waiting:
            done, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=_POLL_S)
            for ref in done:
                index = waiting.pop(ref)
                try:
                    results.append(_get(ray, [ref])[0])
                except MembenchError as error:
                    failures[index] = str(error)
            if (stop.is_set() or failures) and not stopped:
                stopped = True
                _each(ray, [actors[index].stop.remote() for index in waiting.values()])
            if progress is not None and waiting:
                indexes = list(waiting.values())
                for index, tick in zip(indexes, _each(ray, [actors[i].progress.remote() for i in indexes]),
                                       strict=True):
                    if tick is not None:
                        ticks[index] = tick
                if ticks:
                    progress.update(max(t[0] for t in ticks.values()), sum(t[1] for t in ticks.values()),
                                    sum(t[2] for t in ticks.values()))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return results, failures


def _each(ray: Any, refs: list[Any]) -> list[Any]:
    """Each call's answer, None where its actor failed: one failed actor must not hide the others' answers."""
    answers = []
    for ref in refs:
        try:
            answers.append(_get(ray, [ref])[0])
        except MembenchError:
            answers.append(None)
    return answers


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
