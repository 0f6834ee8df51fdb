"""Values a client can put on the wire that do not fit the profile's columns: every row kept, the change counted."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError

from membench.profile.schema import Operation
from membench.protocol.events import Command, Protocol, Reply, Request, Response
from membench.record.limits import INT64_MAX, UINT32_MAX
from tests.conftest import Memcached, Tcpdump, read_profile, run_membench
from tests.record.memcached_exchange import read_until
from tests.record.test_ebpf_record import Recording
from tests.record.test_pairing import Harness

HUGE = 99999999999999999999  # past int64


def odd_traffic(memcached: Memcached) -> Callable[[], None]:
    def traffic() -> None:
        client = Client((memcached.host, memcached.port), default_noreply=False)
        client.set("k", b"v")
        with pytest.raises(MemcacheClientError, match="invalid exptime"):
            client.touch("k", expire=HUGE)
        with socket.create_connection((memcached.host, memcached.port)) as sock:
            sock.sendall(b"touch k %d\r\ngat %d k\r\nmg k T%d v\r\nms k 1 T%d F%d\r\nx\r\nget k\r\nmn\r\n"
                         % (HUGE, HUGE, HUGE, HUGE, 1 << 40))
            read_until(sock, b"MN\r\n")
        for i in range(200):  # ordinary rows around the odd ones must all be kept too
            client.set(f"n{i}", b"x")

    return traffic


def check(table, pairing: dict[str, int]) -> None:
    rows = table.to_pylist()
    assert len(rows) == 1 + 1 + 6 + 200
    touches = [r for r in rows if r["command"] in ("touch", "gat", "mg") and r["status"] == "client_error"]
    assert [(r["command"], r["ttl"]) for r in touches] == [("touch", INT64_MAX)] * 2 + [("gat", INT64_MAX),
                                                                                        ("mg", INT64_MAX)]
    ms = next(r for r in rows if r["command"] == "ms")
    # memcached refuses the T, which does not fit and is counted; of the client flags it keeps the low 32 bits
    assert (ms["ttl"], ms["flags"], ms["status"]) == (INT64_MAX, 0, "client_error")
    assert pairing["values_out_of_range"] == 5


def test_odd_values_from_a_pcap_keep_every_row(memcached: Memcached, tmp_path: Path) -> None:
    pcap = tmp_path / "odd.pcap"
    dump = Tcpdump(pcap, memcached.port)
    odd_traffic(memcached)()
    assert dump.stop() == 0
    out = tmp_path / "odd.profile"
    proc = run_membench("record", str(pcap), str(out), "--port", str(memcached.port), "--quiet")
    assert proc.returncode == 0, proc.stderr
    health = json.loads(next(out.glob("*profile.json")).read_text())["health"]
    check(read_profile(out), health["pairing"])


@pytest.mark.ebpf
def test_odd_values_during_an_ebpf_recording_keep_every_row(memcached: Memcached, tmp_path: Path) -> None:
    recording = Recording(tmp_path / "odd.profile", memcached.port)
    odd_traffic(memcached)()
    err = recording.stop()
    assert "Traceback" not in err and "does not fit" not in err, err
    assert recording.health()["capture"]["dropped_events"] == 0
    check(read_profile(recording.out), recording.health()["pairing"])


def test_a_reply_hours_late_and_a_forged_value_length_are_clamped() -> None:
    h = Harness()
    hours = 3 * 3600 * 10**9
    h.pairer.on_request(Request(Protocol.TEXT, Command.GET, (b"k",), None, None, None, False, False, None, b"", 0, 0,
                                 None, None, None))
    h.pairer.on_response(Response(Protocol.TEXT, Reply.VALUE, b"k", 1 << 40, -1, None, None, None, hours, hours,
                                   None))
    h.pairer.on_response(Response(Protocol.TEXT, Reply.END, None, None, None, None, None, None, hours, hours, None))
    assert h.ops == [Operation(0, 0, "get", "text", h.ops[0].key_hash, 1, UINT32_MAX, None, None, "hit", UINT32_MAX,
                               1, False)]
    assert h.stats.values_out_of_range == 3
