"""Real captured byte streams (TCP payloads extracted with tshark) parse into the counts EXPECTED.md documents."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter, defaultdict

import pytest

from membench.protocol.events import Command, Reply, Request, Response
from membench.protocol.stream import RequestStreamParser, ResponseStreamParser
from tests.conftest import PCAP_CORPUS

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark extracts the TCP payloads")


def parse_pcap(name: str) -> tuple[Counter, Counter, list]:
    """(request command counts, response reply counts, parser stats) over every TCP stream of one capture."""
    fields = ["tcp.stream", "tcp.dstport", "tcp.payload", "frame.time_epoch"]
    out = subprocess.run(["tshark", "-r", str(PCAP_CORPUS / name), "-Y", "tcp.len > 0", "-T", "fields",
                          *(arg for field in fields for arg in ("-e", field))],
                         capture_output=True, text=True, check=True).stdout
    directions: dict[tuple[str, bool], list[tuple[bytes, int]]] = defaultdict(list)
    for line in out.splitlines():
        stream, port, payload, when = line.split("\t")
        directions[(stream, port != "11211")].append((bytes.fromhex(payload), int(float(when) * 1e9)))
    commands: Counter = Counter()
    replies: Counter = Counter()
    all_stats = []
    for (_, response), chunks in directions.items():
        parser = ResponseStreamParser() if response else RequestStreamParser()
        events = [e for data, ts in chunks for e in parser.receive(data, ts)] + parser.close(chunks[-1][1])
        commands.update(e.command for e in events if type(e) is Request)
        replies.update(e.reply for e in events if type(e) is Response)
        all_stats.append(parser.stats)
    return commands, replies, all_stats


@pytest.mark.parametrize(("name", "commands", "replies"), [
    ("memcache_text_tcp_multi_store_load.pcap", {Command.SET: 3, Command.GET: 1, Command.QUIT: 1},
     {Reply.STORED: 3, Reply.VALUE: 3, Reply.END: 1}),
    ("memcache_text_tcp_counter_ops.pcap", {Command.SET: 1, Command.INCR: 1, Command.DECR: 1, Command.GET: 1,
                                            Command.QUIT: 1},
     {Reply.STORED: 1, Reply.NUMBER: 2, Reply.VALUE: 1, Reply.END: 1}),
    ("memcache_text_tcp_stats.pcap", {Command.SET: 1, Command.GET: 1, Command.STATS: 1, Command.QUIT: 1},
     {Reply.STORED: 1, Reply.VALUE: 1, Reply.STAT: 52, Reply.END: 2}),
    ("memcache_bin_tcp_multi_store_load.pcap", {Command.SET: 3, Command.GET: 5, Command.NOOP: 1, Command.QUIT: 1},
     {Reply.STORED: 3, Reply.VALUE: 3, Reply.NOOP: 1, Reply.OK: 1}),
    ("memcache_bin_tcp_delete.pcap", {Command.SET: 1, Command.DELETE: 1, Command.GET: 1, Command.QUIT: 1},
     {Reply.STORED: 1, Reply.DELETED: 1, Reply.MISS: 1, Reply.OK: 1}),
    ("memcache_bin_tcp_stats.pcap", {Command.SET: 1, Command.GET: 1, Command.STATS: 1, Command.QUIT: 1},
     {Reply.STORED: 1, Reply.VALUE: 1, Reply.STAT: 52, Reply.END: 1, Reply.OK: 1}),
    ("deepflow_telnet_session.pcap", {Command.SET: 1, Command.GET: 1, Command.QUIT: 1},
     {Reply.STORED: 1, Reply.VALUE: 1, Reply.END: 1}),
])
def test_small_captures(name: str, commands: dict, replies: dict) -> None:
    got_commands, got_replies, all_stats = parse_pcap(name)
    assert got_commands == Counter(commands)
    assert got_replies == Counter(replies)
    assert all(s.bytes_skipped == 0 and s.errors == 0 for s in all_stats)


def test_application_traffic() -> None:
    commands, replies, all_stats = parse_pcap("deepflow_app_traffic.pcap")
    assert commands == Counter({Command.GET: 10_041, Command.GETS: 112, Command.SET: 1})
    assert replies[Reply.VALUE] == 122  # 122 of the retrievals hit
    assert all(s.bytes_skipped == 0 and s.errors == 0 and s.resyncs == 0 for s in all_stats)
