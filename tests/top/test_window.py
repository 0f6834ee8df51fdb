"""The figures of `membench top`, from hand-made rows: rates, hit ratio, latency, and the two tables' orders."""

from __future__ import annotations

import pytest
from rich.console import Console

from membench.profile.schema import Operation
from membench.top.view import ViewState, render
from membench.top.window import ConnectionOrder, KeyOrder, TopWindow


def op(key: int | None, status: str, connection: int = 0, value: int | None = None, latency: int | None = 10,
       command: str = "get") -> Operation:
    return Operation(timestamp_ns=1, connection=connection, command=command, protocol="text", key_hash=key,
                     key_length=None if key is None else 3, value_length=value, flags=None, ttl=None,
                     status=status, latency_us=latency, batch=1, quiet=False)


def window_with(rows: list[Operation]) -> TopWindow:
    window = TopWindow()
    window.write_many(rows[: len(rows) // 2])
    window.write_many(rows[len(rows) // 2:])
    return window


ROWS = (
    [op(1, "hit", connection=0, value=10, latency=5)] * 6
    + [op(2, "miss", connection=1, latency=50)] * 3
    + [op(3, "stored", connection=1, value=1000, latency=500, command="set")]
    + [op(None, "ok", connection=2, latency=None, command="version")]
)


def test_rates_hit_ratio_and_latency_of_one_interval() -> None:
    snapshot = window_with(ROWS).snapshot(2.0)
    assert snapshot.operations == 11 and snapshot.operations_per_s == 5.5
    assert (snapshot.hits, snapshot.misses) == (6, 3) and snapshot.hit_ratio == pytest.approx(6 / 9)
    assert snapshot.value_bytes == 6 * 10 + 1000
    assert snapshot.latency is not None and snapshot.latency.p50_us == 5 and snapshot.latency.p999_us > 490
    assert snapshot.commands == (("get", 9), ("set", 1), ("version", 1))


@pytest.mark.parametrize(("order", "first"), [(KeyOrder.OPERATIONS, 1), (KeyOrder.BYTES, 3), (KeyOrder.MISSES, 2)])
def test_hot_keys_follow_the_chosen_order(order: KeyOrder, first: int) -> None:
    keys = window_with(ROWS).snapshot(1.0, key_order=order).keys
    assert keys[0].key_hash == first
    assert {line.key_hash for line in keys} == {1, 2, 3}, "keyless operations have no line"
    assert next(line for line in keys if line.key_hash == 1).hits == 6


@pytest.mark.parametrize(("order", "first"), [(ConnectionOrder.OPERATIONS, 0), (ConnectionOrder.BYTES, 1),
                                              (ConnectionOrder.LATENCY, 1)])
def test_busiest_connections_follow_the_chosen_order(order: ConnectionOrder, first: int) -> None:
    connections = window_with(ROWS).snapshot(1.0, connection_order=order).connections
    assert connections[0].connection == first
    assert connections[-1].connection == 2 and connections[-1].latency_p99_us is None


def test_each_snapshot_starts_a_new_interval_and_an_empty_one_is_drawn() -> None:
    window = window_with(ROWS)
    window.snapshot(1.0)
    empty = window.snapshot(1.0)
    assert empty.operations == 0 and empty.hit_ratio is None and empty.latency is None and not empty.keys
    console = Console(width=120, record=True)
    console.print(render(empty, ViewState(source="ebpf:any"), {}, 0, 0))
    assert "0 ops/s" in console.export_text()


def test_keys_are_hashes_unless_shown() -> None:
    snapshot = window_with(ROWS).snapshot(1.0)
    for show, expected, absent in ((False, f"{1:016x}", "secret"), (True, "secret", f"{1:016x}")):
        console = Console(width=120, record=True)
        console.print(render(snapshot, ViewState(source="lo", show_keys=show), {1: b"secret"}, 0, 1))
        text = console.export_text()
        assert expected in text and absent not in text
