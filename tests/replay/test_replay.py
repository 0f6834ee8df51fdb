"""Replays of synthetic profiles against a real memcached, checked from the server's side."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from membench.profile.schema import Operation
from membench.protocol.events import Command, Request
from membench.protocol.stream import RequestStreamParser
from membench.replay.keys import KeySynthesizer
from membench.replay.options import ReplayOptions, Timing
from membench.replay.result import HitRatios
from membench.replay.run import replay
from membench.replay.survey import logical_command
from tests.conftest import Memcached, free_port, run_membench, start_memcached
from tests.relay import RecordingRelay
from tests.replay.profiles import T0, ProfileBuilder, mixed_profile, source, write_profile

COUNTERS = ("cmd_get", "get_hits", "get_misses", "cmd_set", "delete_hits", "delete_misses", "incr_hits",
            "incr_misses", "touch_hits", "touch_misses", "cmd_touch")


def delta(server: Memcached, before: dict[str, int | str]) -> dict[str, int]:
    after = server.stats()
    return {name: int(after[name]) - int(before[name]) for name in COUNTERS}


MIXED_EXPECTED = {
    "cmd_get": 50 + 50 + 3, "get_hits": 52, "get_misses": 51,
    "cmd_set": 50 + 30 + 1 + 10,  # warm-up of the 50 keys first seen as hits, sets, the add, quiet sets
    "delete_hits": 10, "delete_misses": 1, "incr_hits": 1, "incr_misses": 1,
    "touch_hits": 1, "touch_misses": 1, "cmd_touch": 2,
}
# Meta has no touch command: `mg <key> T<ttl>` is one, and memcached counts its miss as a get miss.
META_EXPECTED = {**MIXED_EXPECTED, "cmd_get": 104, "get_misses": 52, "touch_misses": 0, "cmd_touch": 1}


def expected_for(protocol: str) -> dict[str, int]:
    return META_EXPECTED if protocol == "meta" else MIXED_EXPECTED


@pytest.mark.parametrize("recorded", ["text", "meta", "binary"])
def test_server_counters_match_the_profile(memcached, recorded):
    before = memcached.stats()
    result = replay(mixed_profile(recorded).source(), ReplayOptions(targets=[memcached.address]))
    assert delta(memcached, before) == expected_for(recorded)
    assert result.completed and result.errors == {}
    assert result.hit_ratio == HitRatios(recorded=round(52 / 103, 6), replayed=round(52 / 103, 6))
    assert result.commands["get"].hits == 52 and result.commands["get"].misses == 51
    assert result.commands["delete"].statuses == {"deleted": 10, "not_found": 1}
    quiet_sets = {"stored": 30, "noreply": 10} if recorded == "text" else {"stored": 40}
    assert result.commands["set"].statuses == quiet_sets
    assert result.unexpected_replies == 0


@pytest.mark.parametrize("protocol", ["text", "meta", "binary"])
def test_any_protocol_replays_any_profile(memcached, protocol):
    before = memcached.stats()
    options = ReplayOptions(targets=[memcached.address], protocol=protocol)
    result = replay(mixed_profile("text").source(), options)
    assert delta(memcached, before) == expected_for(protocol)
    assert result.errors == {} and result.unexpected_replies == 0


def requests_of(data: bytes) -> list[tuple[str, tuple[bytes, ...]]]:
    events = RequestStreamParser().receive(bytes(data), 0)
    assert all(isinstance(event, Request) for event in events)
    return [(event.command.value, event.keys) for event in events]


def normalized(requests: list[tuple[str, tuple[bytes, ...]]]) -> list[tuple[str, tuple[bytes, ...]]]:
    """Meta multi-gets arrive as one mg per key, and replies to mn are ours: compare key operations only."""
    out = []
    for command, keys in requests:
        name = logical_command(command)
        if name in (Command.NOOP, Command.VERSION):
            continue
        out.extend((name.value, (key,)) for key in keys)
    return out


@pytest.mark.parametrize("protocol", ["text", "meta", "binary"])
def test_order_and_keys_per_connection_seen_by_the_server(memcached, protocol):
    rng = random.Random(7)
    profile = ProfileBuilder(protocol="text")
    for _ in range(600):
        connection = rng.randrange(4)
        kind = rng.random()
        if kind < 0.6:
            keys = rng.sample(range(300), rng.choice([1, 1, 1, 3]))
            profile.add("get", keys, statuses=["miss"] * len(keys), connection=connection,
                        key_length=rng.choice([5, 12, 40]))
        elif kind < 0.9:
            profile.add("set", [rng.randrange(300)], status="stored", value_length=rng.randrange(1, 500),
                        connection=connection, key_length=12)
        else:
            profile.add("delete", [rng.randrange(300)], status="not_found", connection=connection, key_length=12)
    with RecordingRelay((memcached.host, memcached.port)) as relay:
        options = ReplayOptions(targets=[relay.address], protocol=protocol, warm=False)
        result = replay(profile.source(), options)
        time.sleep(0.2)
    assert result.completed and result.errors == {}
    seen = Counter(tuple(normalized(requests_of(data))) for data in relay.sent if data)
    # What each recorded connection sent, in order, with the keys the replay synthesizes for its hashes.
    short = {(op.key_hash, op.key_length) for op in profile.operations if op.key_length < 10}
    keys = KeySynthesizer(short)
    expected: dict[int, list[tuple[str, tuple[bytes, ...]]]] = {}
    for op in profile.operations:
        expected.setdefault(op.connection, []).append((op.command, (keys.key(op.key_hash, op.key_length),)))
    assert seen == Counter(tuple(sequence) for sequence in expected.values())
    assert sum(len(sequence) for sequence in seen.elements()) == len(profile.operations)


def shared_hot_keys() -> ProfileBuilder:
    """8 connections sharing Pareto-hot keys: gets, some sets and deletes, recorded over a cache already warm."""
    rng = random.Random(11)
    present = set(range(0, 4000, 3))  # what the live cache held before the recording began
    profile = ProfileBuilder(protocol="text")
    for _ in range(6000):
        key = int(rng.paretovariate(1.2) * 10) % 4000
        roll = rng.random()
        if roll < 0.93:
            profile.add("get", [key], status="hit" if key in present else "miss",
                        value_length=200 if key in present else None, connection=rng.randrange(8))
        elif roll < 0.98:
            present.add(key)
            profile.add("set", [key], status="stored", value_length=200, connection=rng.randrange(8))
        else:
            profile.add("delete", [key], status="deleted" if key in present else "not_found",
                        connection=rng.randrange(8))
            present.discard(key)
    return profile


def test_hit_ratio_with_warm_up_is_the_recorded_one(memcached):
    profile = shared_hot_keys()
    # Connections share hot keys: the default order (each key's requests in the recorded order across connections)
    # keeps the interleaving that made each outcome, where the recorded schedule kept it only as far as the
    # machine kept pace with it (it flaked on a busy two-core machine).
    warm = replay(profile.source(), ReplayOptions(targets=[memcached.address]))
    assert abs(warm.hit_ratio.replayed - warm.hit_ratio.recorded) < 0.01
    memcached.stop()
    fresh = start_memcached()
    try:
        cold = replay(profile.source(), ReplayOptions(targets=[fresh.address], warm=False))
    finally:
        fresh.stop()
    assert cold.hit_ratio.replayed < warm.hit_ratio.recorded - 0.05  # the warm-up is what made it match


@pytest.mark.parametrize("pipeline", [None, 16])
def test_every_loop_keeps_the_order_across_connections_from_its_first_request(memcached, pipeline):
    # Connection 0's get waits for connection 1's set. At the start of a later loop it must not take connection 1's
    # answers of the loop before for this loop's (with a fixed depth nothing else holds it back): it would go
    # first and miss.
    profile = ProfileBuilder(protocol="text")
    profile.add("get", [9], status="miss", connection=0)
    profile.add("set", [3], status="stored", value_length=10, connection=1)
    profile.add("get", [3], status="hit", value_length=10, connection=0)
    profile.add("delete", [3], status="deleted", connection=1)
    result = replay(profile.source(), ReplayOptions(targets=[memcached.address], loops=5, warm=False,
                                                    pipeline=pipeline))
    assert result.commands["get"].statuses == {"hit": 5, "miss": 5}
    assert result.commands["delete"].statuses == {"deleted": 5}


def test_a_deep_pipeline_over_shared_keys_ends_with_the_recorded_outcomes(memcached):
    # At depth 16, chains of connections wait for each other's answers. Each link registered itself with the one it
    # waited for at every pump, and was pumped once per registration: the wake-ups multiplied along the chains
    # until the replay spun without sending (it never ended; --duration makes that a failure, not a hang).
    result = replay(shared_hot_keys().source(), ReplayOptions(targets=[memcached.address], pipeline=16, duration=30))
    assert result.completed and result.ops == 6000
    assert result.hit_ratio.replayed == pytest.approx(result.hit_ratio.recorded, abs=0.005)


def test_original_timing_keeps_the_schedule(memcached):
    profile = ProfileBuilder(protocol="text")
    for index in range(60):
        # Bursts of 3 requests every 60 ms, on 3 connections: the last burst is 1.14 s after the first.
        profile.add("get", [index], status="miss", connection=index % 3,
                    at_ns=T0 + (index // 3) * 60_000_000 + (index % 3) * 1000)
    started = time.monotonic()
    result = replay(profile.source(), ReplayOptions(targets=[memcached.address], timing=Timing.ORIGINAL, speed=2))
    elapsed = time.monotonic() - started
    assert 0.57 <= result.duration_s < 0.9 and elapsed < 5
    assert result.lateness is not None and result.lateness.p99 < 20_000
    intended = result.commands["get"].latency_from_intended
    assert intended is not None and intended.max >= result.commands["get"].latency.p50


def test_fixed_rate_is_open_loop(memcached):
    profile = ProfileBuilder(protocol="meta", gap_us=1)
    for index in range(400):
        profile.add("mg", [index], status="miss", connection=index % 4)
    result = replay(profile.source(), ReplayOptions(targets=[memcached.address], timing=Timing.RATE, rate=2000))
    assert 0.19 <= result.duration_s < 0.5
    assert result.ops == 400
    assert result.lateness is not None and result.lateness.p99 < 20_000


def test_memcached_killed_and_restarted_mid_replay():
    port = free_port()
    server = start_memcached(port=port)
    profile = ProfileBuilder(protocol="text", gap_us=500)
    for index in range(4000):  # 2 s at the recorded pace, 4 connections
        profile.add("get", [index % 500], status="miss", connection=index % 4)
    restarted: list[Memcached] = []

    def crash() -> None:
        time.sleep(0.5)
        server.process.send_signal(signal.SIGSTOP)  # requests pile up in flight...
        time.sleep(0.2)
        server.process.kill()  # ...and are lost with the server
        server.process.wait()
        time.sleep(0.3)
        restarted.append(start_memcached(port=port))

    thread = threading.Thread(target=crash)
    thread.start()
    try:
        options = ReplayOptions(targets=[f"127.0.0.1:{port}"], timing=Timing.ORIGINAL, pipeline=64, warm=False)
        result = replay(profile.source(), options)
    finally:
        thread.join()
        for late in restarted:
            late.stop()
    # It runs to its end, but a quarter of its operations were lost: that is no measurement (--max-error-ratio).
    assert not result.interrupted and not result.completed
    assert result.error_ratio > options.max_error_ratio
    assert result.errors.get("lost", 0) > 0
    assert result.reconnects >= 4
    statuses = result.commands["get"].statuses
    assert sum(statuses.values()) == 4000  # every operation is accounted for: answered or counted lost
    assert statuses.get("miss", 0) > 1000


def test_replies_that_never_come_count_as_timeouts(memcached):
    profile = ProfileBuilder(protocol="text")
    for index in range(4):
        profile.add("get", [index], status="miss", connection=index % 2)
    memcached.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = replay(profile.source(), ReplayOptions(targets=[memcached.address], timeout=0.3, warm=False,
                                                        reconnect_timeout=1))
        elapsed = time.monotonic() - started
    finally:
        memcached.process.send_signal(signal.SIGCONT)
    assert result.errors == {"timeout": 4}
    assert elapsed < 5


def test_several_workers_split_the_connections(memcached):
    before = memcached.stats()
    result = replay(mixed_profile("binary", connections=6).source(),
                    ReplayOptions(targets=[memcached.address], workers=2))
    assert delta(memcached, before) == MIXED_EXPECTED
    assert result.ops == sum(entry.ops for entry in result.commands.values())
    assert result.completed


@pytest.mark.parametrize("connections", [2, 9])
def test_connections_fold_and_spread(memcached, connections):
    profile = mixed_profile("text", connections=4)
    with RecordingRelay((memcached.host, memcached.port)) as relay:
        result = replay(profile.source(), ReplayOptions(targets=[relay.address], connections=connections,
                                                        warm=False))
        time.sleep(0.2)
    # The reachability check connects without sending: every other connection is one of the replay's.
    assert sum(1 for data in relay.sent if data) == connections
    assert result.errors == {} and result.ops == len(profile.operations)


def test_several_targets_share_the_keys(memcached):
    second = start_memcached()
    try:
        profile = ProfileBuilder(protocol="text")
        for key in range(300):
            profile.add("set", [key], status="stored", value_length=10, connection=key % 3)
        before = [memcached.stats(), second.stats()]
        result = replay(profile.source(), ReplayOptions(targets=[memcached.address, second.address]))
        sets = [delta(server, stats)["cmd_set"] for server, stats in zip((memcached, second), before, strict=True)]
    finally:
        second.stop()
    assert sum(sets) == 300 and min(sets) > 50
    assert result.errors == {}


def test_cli_writes_json_and_hdr_log_and_loops(memcached, tmp_path):
    import json

    from hdrh.log import HistogramLogReader

    from membench.replay.stats import new_histogram

    profile = write_profile(tmp_path / "p.profile", mixed_profile("meta").operations)
    out, log = tmp_path / "r.json", tmp_path / "r.hlog"
    before = memcached.stats()
    proc = run_membench("replay", str(profile), "--target", memcached.address, "--protocol", "binary", "--loop", "2",
                        "--json", str(out), "--hdr-log", str(log))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    rows = len(mixed_profile("meta").operations)
    assert data["loops"] == 2 and data["ops"] == 2 * rows and data["completed"] is True
    assert delta(memcached, before)["cmd_get"] == 2 * 103
    assert {"p50", "p90", "p99", "p99.9", "max"} <= set(data["commands"]["get"]["latency_us"])
    reader = HistogramLogReader(str(log), new_histogram())
    total = 0
    while (histogram := reader.get_next_interval_histogram()) is not None:
        total += histogram.get_total_count()
    assert total == data["requests"]


def test_cli_unreachable_target_is_one_line(tmp_path):
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    port = free_port()
    proc = run_membench("replay", str(profile), "--target", f"127.0.0.1:{port}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"membench: cannot connect to target 127.0.0.1:{port}: Connection refused"
    bad = run_membench("replay", str(profile), "--target", "localhost:http")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "bad --target" in bad.stderr


@pytest.mark.parametrize("option", ["--timeout", "--duration", "--rate", "--speed"])
def test_cli_numbers_past_any_use_are_one_line(tmp_path, option):
    # An infinite --timeout overflowed the connect timeout into an internal error; an infinite --duration ran forever.
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    proc = run_membench("replay", str(profile), "--target", "127.0.0.1:1", option, "inf")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"membench: argument {option}: must be at most 1e+09: inf")


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--pipeline", "99999999999999999999", "must be at most 1,000,000,000"),  # an OverflowError mid-replay
    ("--connections", "1000001", "at most 1,000,000 connections"),  # planning hung on its streams
    ("--workers", "257", "at most 256 worker processes"),  # forked one process each, whatever the profile
])
def test_cli_counts_past_any_use_are_one_line(tmp_path, option, value, said):
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    proc = run_membench("replay", str(profile), "--target", "127.0.0.1:1", option, value)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"membench: argument {option}: {said}"), proc.stderr


@pytest.mark.parametrize(("stop", "workers"), [(signal.SIGINT, "1"), (signal.SIGTERM, "1"), (signal.SIGTERM, "2")])
def test_cli_ctrl_c_ends_cleanly_with_results(memcached, tmp_path, stop, workers):
    """Ctrl+C, or a SIGTERM (which once ended the replay with no result at all, exit 143)."""
    import json

    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "membench", "replay", str(profile), "--target",
                             memcached.address, "--loop", "forever", "--json", str(out), "--workers", workers],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 1, stderr
    data = json.loads(out.read_text())
    assert data["interrupted"] is True and data["completed"] is False
    assert data["loops"] >= 1 and data["ops"] >= len(mixed_profile("text").operations)
    assert data["errors"] == {}
    assert "Traceback" not in stderr


def test_empty_and_foreign_profiles_are_refused(memcached):
    from membench.errors import MembenchError

    with pytest.raises(MembenchError, match="no operations"):
        replay(source([]), ReplayOptions(targets=[memcached.address]))
    skipped = [Operation(T0, 0, "quit", "text", None, None, None, None, None, "ok", None, 1, False)]
    result = replay(source(skipped), ReplayOptions(targets=[memcached.address]))
    assert result.ops == 0 and result.profile.skipped_commands == {"quit": 1}
    # Sending nothing measures nothing: not a completed replay (the CLI exits 1), and said so.
    assert not result.completed and result.warnings[-1] == "no operation was replayed: this run measured nothing"
    foreign = [Operation(T0, 0, "get", "bogus", 7, 10, None, None, None, "miss", 50, 1, False)]
    with pytest.raises(MembenchError, match="a protocol membench does not know: 'bogus'"):
        replay(source(foreign), ReplayOptions(targets=[memcached.address]))


def test_more_workers_than_connections_and_nothing_to_send_do_not_spin(memcached):
    profile = ProfileBuilder(protocol="text")
    profile.add("get", [1], status="miss")
    result = replay(profile.source(), ReplayOptions(targets=[memcached.address], workers=3, loops=2, warm=False))
    assert result.completed and result.loops == 2 and result.ops == 2
    skipped = [Operation(T0, 0, "quit", "text", None, None, None, None, None, "ok", None, 1, False)]
    assert replay(source(skipped), ReplayOptions(targets=[memcached.address], loops=None)).ops == 0


def test_a_server_that_drops_the_warm_up_is_one_line(tmp_path):
    """A real misbehaving server: it accepts, reads a little and closes, while the warm-up is loading keys."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        with listener:
            while not stop.is_set():
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    connection.recv(100)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    profile = write_profile(tmp_path / "p.profile", mixed_profile("text").operations)
    try:
        proc = run_membench("replay", str(profile), "--target", f"127.0.0.1:{port}")
    finally:
        stop.set()
        server.join(timeout=5)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("membench: warm-up: "), proc.stderr
    assert f"127.0.0.1:{port}" in lines[0]
