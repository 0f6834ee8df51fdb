"""Pairing rules on hand-made event sequences: each case is a rule of the memcached protocols."""

from __future__ import annotations

from membench.profile.schema import Operation
from membench.protocol.events import Command, Protocol, Reply, Request, Response
from membench.record.anonymize import KeyHasher
from membench.record.pairing import ConnectionPairer, PairingStats

HASHER = KeyHasher.from_passphrase("test")


def req(command: Command, *keys: bytes, protocol: Protocol = Protocol.TEXT, value_length: int | None = None,
        noreply: bool = False, quiet: bool = False, opaque: int | bytes | None = None, t: int = 1_000,
        letters: bytes = b"") -> Request:
    return Request(protocol, command, keys, value_length, 0 if value_length is not None else None, None,
                   noreply, quiet, opaque, letters, t, t + 1_000, None, None, None)


def rep(reply: Reply, key: bytes | None = None, value_length: int | None = None, protocol: Protocol = Protocol.TEXT,
        opaque: int | bytes | None = None, t: int = 10_000) -> Response:
    return Response(protocol, reply, key, value_length, 0 if value_length is not None else None, opaque, None, None,
                    t, t, None)


class Harness:
    def __init__(self) -> None:
        self.ops: list[Operation] = []
        self.stats = PairingStats()
        counter = iter(range(1, 1_000_000))
        self.pairer = ConnectionPairer(0, HASHER, self.ops.append, self.stats, lambda: next(counter))

    def statuses(self) -> list[tuple[str, str]]:
        return [(op.command, op.status) for op in self.ops]


def test_multi_get_hits_and_misses_in_key_order_with_repeated_key():
    h = Harness()
    h.pairer.on_request(req(Command.GET, b"x", b"k1", b"k2", b"k1", b"y"))
    for key, size in ((b"k1", 10), (b"k2", 20), (b"k1", 10)):
        h.pairer.on_response(rep(Reply.VALUE, key, size))
    h.pairer.on_response(rep(Reply.END))
    assert [op.status for op in h.ops] == ["miss", "hit", "hit", "hit", "miss"]
    assert [op.value_length for op in h.ops] == [None, 10, 20, 10, None]
    assert len({op.batch for op in h.ops}) == 1
    assert [op.key_hash for op in h.ops] == [HASHER(k) for k in (b"x", b"k1", b"k2", b"k1", b"y")]
    assert all(op.latency_us == 8 for op in h.ops)  # reply start 10 µs - request end 2 µs
    assert h.stats.unmatched_responses == 0


def test_noreply_and_quit_emit_without_reply_and_do_not_shift_fifo():
    h = Harness()
    h.pairer.on_request(req(Command.SET, b"a", value_length=5, noreply=True))
    h.pairer.on_request(req(Command.DELETE, b"a"))
    h.pairer.on_response(rep(Reply.DELETED))
    h.pairer.on_request(req(Command.QUIT))
    assert h.statuses() == [("set", "noreply"), ("delete", "deleted"), ("quit", "noreply")]
    assert h.ops[0].quiet and h.ops[0].latency_us is None and h.ops[0].value_length == 5


def test_binary_getkq_pipeline_closed_by_noop():
    h = Harness()
    keys = [b"x", b"k1", b"k2", b"k3", b"y"]
    for key in keys:
        h.pairer.on_request(req(Command.GET, key, protocol=Protocol.BINARY, quiet=True, opaque=0))
    h.pairer.on_request(req(Command.NOOP, protocol=Protocol.BINARY, opaque=0))
    for key in (b"k1", b"k2", b"k3"):
        h.pairer.on_response(rep(Reply.VALUE, key, 40, protocol=Protocol.BINARY, opaque=0))
    h.pairer.on_response(rep(Reply.NOOP, protocol=Protocol.BINARY, opaque=0))
    assert h.statuses() == [("get", "miss"), ("get", "hit"), ("get", "hit"), ("get", "hit"), ("get", "miss"),
                            ("noop", "ok")]
    assert [op.latency_us for op in h.ops[:5]] == [None, 8, 8, 8, None]
    assert h.stats.unanswered_requests == 0 and h.stats.unmatched_responses == 0


def test_meta_quiet_with_opaque_and_mn():
    h = Harness()
    h.pairer.on_request(req(Command.META_GET, b"a", protocol=Protocol.META, quiet=True, opaque=b"1",
                            letters=b"vqO"))
    h.pairer.on_request(req(Command.META_SET, b"b", protocol=Protocol.META, quiet=True, opaque=b"2",
                            value_length=3))
    h.pairer.on_request(req(Command.META_GET, b"c", protocol=Protocol.META, quiet=True, opaque=b"3",
                            letters=b"vqO"))
    h.pairer.on_request(req(Command.META_NOOP, protocol=Protocol.META))
    h.pairer.on_response(rep(Reply.VALUE, None, 7, protocol=Protocol.META, opaque=b"3"))
    h.pairer.on_response(rep(Reply.NOOP, protocol=Protocol.META))
    assert h.statuses() == [("mg", "miss"), ("ms", "stored"), ("mg", "hit"), ("mn", "ok")]
    assert h.ops[2].value_length == 7


def test_reply_hole_marks_lost_replies_unanswered_instead_of_shifting():
    h = Harness()
    h.pairer.on_request(req(Command.SET, b"a", value_length=1))
    h.pairer.on_request(req(Command.GET, b"a"))
    h.pairer.on_request(req(Command.DELETE, b"a"))
    # The STORED and the get's reply were in the hole.
    h.pairer.on_reply_hole()
    h.pairer.on_response(rep(Reply.DELETED))
    assert h.statuses() == [("set", "unanswered"), ("get", "unanswered"), ("delete", "deleted")]
    assert h.stats.unanswered_requests == 2


def test_reply_without_request_is_counted_not_paired():
    h = Harness()
    h.pairer.on_response(rep(Reply.STORED))
    h.pairer.on_request(req(Command.GET, b"a"))
    h.pairer.on_response(rep(Reply.STORED))  # cannot answer a get, and no hole: the request side lost something
    h.pairer.on_response(rep(Reply.END))
    assert h.statuses() == [("get", "miss")]
    assert h.stats.unmatched_responses == 2


def test_close_settles_pending():
    h = Harness()
    h.pairer.on_request(req(Command.GET, b"a", protocol=Protocol.BINARY, quiet=True, opaque=1))
    h.pairer.on_request(req(Command.GET, b"b"))
    h.pairer.close()
    assert h.statuses() == [("get", "noreply"), ("get", "unanswered")]


def test_errors_answer_any_command_and_text_stats_collects_lines():
    h = Harness()
    h.pairer.on_request(req(Command.STATS))
    for _ in range(3):
        h.pairer.on_response(rep(Reply.STAT))
    h.pairer.on_response(rep(Reply.END))
    h.pairer.on_request(req(Command.GET, b"k" * 300))
    h.pairer.on_response(rep(Reply.CLIENT_ERROR))
    assert h.statuses() == [("stats", "ok"), ("get", "client_error")]
    assert h.ops[0].key_hash is None


def test_quiet_meta_replies_go_to_the_command_that_can_send_them():
    h = Harness()
    # memcached's NF here is the md's: a quiet ms without C cannot answer NF, and its HD is hidden
    h.pairer.on_request(req(Command.META_SET, b"k", protocol=Protocol.META, value_length=1, quiet=True,
                            letters=b"q"))
    h.pairer.on_request(req(Command.META_DELETE, b"missing", protocol=Protocol.META, quiet=True, letters=b"q"))
    # a quiet hit is VA with `v` and HD without, so the HD that comes is the second get's
    h.pairer.on_request(req(Command.META_GET, b"a", protocol=Protocol.META, quiet=True, letters=b"qv"))
    h.pairer.on_request(req(Command.META_GET, b"b", protocol=Protocol.META, quiet=True, letters=b"q"))
    h.pairer.on_request(req(Command.META_NOOP, protocol=Protocol.META))
    for reply in (Reply.NOT_FOUND, Reply.HD, Reply.NOOP):
        h.pairer.on_response(rep(reply, protocol=Protocol.META))
    assert h.statuses() == [("ms", "stored"), ("md", "not_found"), ("mg", "miss"), ("mg", "hit"), ("mn", "ok")]
    assert h.stats.unmatched_responses == h.stats.unanswered_requests == 0
