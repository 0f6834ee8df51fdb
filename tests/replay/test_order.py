"""The happens-before tracker on hand-made requests: what waits for what, and what does not."""

from __future__ import annotations

from membench.protocol.events import Command
from membench.replay.order import KeyOrder

GET, SET, DELETE, FLUSH, VERSION = Command.GET, Command.SET, Command.DELETE, Command.FLUSH_ALL, Command.VERSION


def test_a_read_waits_for_the_last_write_of_its_key_on_another_stream() -> None:
    order = KeyOrder()
    assert order.dependencies(0, 0, 0, SET, [b"k"]) == ()
    assert order.dependencies(1, 0, 1, GET, [b"k"]) == ((0, 0),)
    assert order.dependencies(1, 0, 2, GET, [b"other"]) == ()


def test_reads_do_not_wait_for_reads_but_the_next_write_waits_for_all_of_them() -> None:
    order = KeyOrder()
    order.dependencies(0, 0, 0, SET, [b"k"])
    assert order.dependencies(1, 0, 1, GET, [b"k"]) == ((0, 0),)
    assert order.dependencies(2, 0, 2, GET, [b"k"]) == ((0, 0),)
    assert dict(order.dependencies(3, 0, 3, DELETE, [b"k"])) == {0: 0, 1: 1, 2: 2}
    assert order.dependencies(0, 0, 4, GET, [b"k"]) == ((3, 3),)


def test_the_same_stream_needs_nothing_and_only_the_latest_request_per_stream_counts() -> None:
    order = KeyOrder()
    order.dependencies(0, 0, 0, SET, [b"a"])
    order.dependencies(0, 0, 1, SET, [b"b"])
    assert order.dependencies(0, 0, 2, GET, [b"a", b"b"]) == ()
    assert order.dependencies(1, 0, 3, GET, [b"a", b"b"]) == ((0, 1),)


def test_flush_all_is_a_barrier_for_every_stream_of_its_server_only() -> None:
    order = KeyOrder()
    order.dependencies(0, 0, 0, SET, [b"a"])
    order.dependencies(1, 0, 1, GET, [b"b"])
    order.dependencies(2, 1, 2, SET, [b"c"])  # another server
    assert dict(order.dependencies(3, 0, 3, FLUSH, [])) == {0: 0, 1: 1}
    assert order.dependencies(0, 0, 4, VERSION, []) == ((3, 3),)
    assert order.dependencies(0, 0, 5, GET, [b"a"]) == ()  # the flush covers the set before it
    assert order.dependencies(2, 1, 6, GET, [b"c"]) == ()
