"""Nothing lost silently, nothing claimed that is not true: odd values on the wire, truncated captures."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pymemcache.client.base import Client

from membench.capture.pcap import PcapFileSource
from membench.profile.health import losses as profile_losses
from membench.profile.metadata import METADATA_FILE, ProfileMetadata
from membench.profile.reader import ProfileReader
from membench.profile.writer import ProfileWriter
from membench.record.anonymize import KeyHasher
from membench.record.recorder import Recorder
from membench.record.status import losses
from tests.capture.capture_builders import (
    SERVER_PORT,
    pcapng_interface,
    pcapng_packet,
    pcapng_section,
    write_pcap,
)
from tests.capture.test_pcap_errors import conversation_frames
from tests.conftest import PCAP_CORPUS, Memcached, Tcpdump, read_profile, run_membench, small_tmpfs
from tests.record.test_ebpf_record import Recording

# Each is something a client can send; memcached refuses the first four (CLIENT_ERROR) and goes on, reading the
# refused set's data line as a command of its own (ERROR): seven operations, three values beyond the columns.
OPERATIONS_PER_ROUND = 7
OUT_OF_RANGE_PER_ROUND = 3
ODD_COMMANDS = [b"touch k 99999999999999999999\r\n", b"gat 99999999999999999999 k\r\n",
                b"set k 0 -99999999999999999999 1\r\nx\r\n", b"mg k T99999999999999999999\r\n",
                b"set k 0 0 1\r\nx\r\n", b"get k\r\n"]


def _send_odd_commands(memcached: Memcached, rounds: int) -> None:
    with socket.create_connection((memcached.host, memcached.port), timeout=5) as sock:
        for _ in range(rounds):
            for command in ODD_COMMANDS:
                sock.sendall(command)
                reply = b""
                while not reply.endswith(b"\r\n") or (command.startswith(b"get") and not reply.endswith(b"END\r\n")):
                    reply += sock.recv(4096)


def _check_profile(out: Path, rounds: int) -> None:
    table = read_profile(out)
    assert table.num_rows == rounds * OPERATIONS_PER_ROUND, "every operation is kept"
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["complete"] is True
    assert metadata["health"]["pairing"]["values_out_of_range"] == rounds * OUT_OF_RANGE_PER_ROUND
    gets = table.filter(pc.equal(table["command"].cast(pa.string()), "get"))
    assert gets["status"].to_pylist() == ["hit"] * rounds


def test_values_beyond_the_schema_from_a_live_client_are_counted_and_every_row_kept(memcached, tmp_path):
    out = tmp_path / "odd.profile"
    recording = Recording(out, memcached.port)
    _send_odd_commands(memcached, rounds=50)
    time.sleep(1.5)  # past a flush of the writer thread, which a row it could not convert used to kill
    _send_odd_commands(memcached, rounds=50)
    err = recording.stop()
    assert "Traceback" not in err
    _check_profile(out, rounds=100)


def test_values_beyond_the_schema_in_a_pcap_are_counted_and_not_called_nothing_lost(memcached, tmp_path):
    pcap = tmp_path / "odd.pcap"
    dump = Tcpdump(pcap, memcached.port)
    _send_odd_commands(memcached, rounds=20)
    assert dump.stop() == 0
    out = tmp_path / "odd.profile"
    proc = run_membench("record", str(pcap), str(out), "--port", str(memcached.port))
    assert proc.returncode == 0, proc.stderr
    _check_profile(out, rounds=20)
    assert "nothing lost" not in proc.stderr
    assert f"values beyond the profile's columns (clamped or null) {20 * OUT_OF_RANGE_PER_ROUND}" in proc.stderr


def test_a_truncated_capture_file_is_not_called_nothing_lost(tmp_path):
    data = (PCAP_CORPUS / "memcache_text_tcp_single_load_store.pcap").read_bytes()
    truncated = tmp_path / "cut.pcap"
    truncated.write_bytes(data[: len(data) - 7])
    proc = run_membench("record", str(truncated), str(tmp_path / "cut.profile"))
    assert proc.returncode == 0, proc.stderr
    assert "nothing lost" not in proc.stderr
    assert "the capture file is truncated 1" in proc.stderr


def test_a_capture_with_no_traffic_on_the_port_says_so(tmp_path):
    """A wrong --port recorded 0 operations and said 'nothing lost', which is true but no help."""
    pcap = PCAP_CORPUS / "memcache_text_tcp_single_load_store.pcap"
    wrong = run_membench("record", str(pcap), str(tmp_path / "wrong.profile"), "--port", "9999", check=True)
    assert "none of the 18 packets was to or from port 9999: is --port the memcached port" in wrong.stderr
    right = run_membench("record", str(pcap), str(tmp_path / "right.profile"), check=True)
    assert "none of the" not in right.stderr


def _record_offsets(data: bytes) -> list[int]:
    """Where each record of a little-endian pcap file starts."""
    offsets, at = [], 24
    while at + 16 <= len(data):
        offsets.append(at)
        at += 16 + int.from_bytes(data[at + 8 : at + 12], "little")
    return offsets


def test_a_corrupt_record_midway_keeps_every_operation_before_it(tmp_path):
    """The operations parsed before a corrupt record were in the pipeline and never written: the profile had none."""
    data = (PCAP_CORPUS / "deepflow_app_traffic.pcap").read_bytes()
    at = _record_offsets(data)[len(_record_offsets(data)) // 2]
    corrupt = bytearray(data)
    corrupt[at + 8 : at + 12] = (2**31).to_bytes(4, "little")  # a captured length past any record
    (tmp_path / "corrupt.pcap").write_bytes(corrupt)
    (tmp_path / "cut.pcap").write_bytes(data[:at])
    proc = run_membench("record", str(tmp_path / "corrupt.pcap"), str(tmp_path / "corrupt.profile"))
    cut = run_membench("record", str(tmp_path / "cut.pcap"), str(tmp_path / "cut.profile"), check=True)
    before = json.loads((tmp_path / "cut.profile" / METADATA_FILE).read_text())["operations"]
    assert before > 1000, cut.stderr
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1] == (f"membench: corrupt pcap record at byte {at} of "
                                            f"{tmp_path / 'corrupt.pcap'}; the {before:,} operations before it "
                                            "are kept")
    metadata = json.loads((tmp_path / "corrupt.profile" / METADATA_FILE).read_text())
    assert metadata["operations"] == before and not metadata["complete"]
    assert ProfileReader(tmp_path / "corrupt.profile").num_rows == before


def _recorded(path: Path, stop_first: bool, profile: Path) -> dict[str, int]:
    source = PcapFileSource(path, [SERVER_PORT])
    if stop_first:
        source.stop()  # what Ctrl+C does, here before the first packet
    with ProfileWriter(profile, ProfileMetadata(source=source.name)) as writer:
        summary = Recorder(source, writer, KeyHasher.random()).run()
    if not stop_first:
        source.stop()  # after the end: changes nothing
    return summary.health["capture"]


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_a_capture_file_stopped_before_its_end_says_so(tmp_path, kind):
    """A Ctrl+C while a capture file was read wrote a complete-looking profile, exit 0, of its first part only."""
    if kind == "pcap":
        path = write_pcap(tmp_path / "c.pcap", 1, conversation_frames())
    else:
        path = tmp_path / "c.pcapng"
        path.write_bytes(pcapng_section() + pcapng_interface(1)
                         + b"".join(pcapng_packet(packet) for packet in conversation_frames()))
    assert _recorded(path, True, tmp_path / "stopped.profile").get("stopped_before_end") == 1
    assert "stopped_before_end" not in _recorded(path, False, tmp_path / "whole.profile")


@pytest.mark.parametrize(("health", "expected"), [
    ({"capture": {"packets": 5, "bytes_seen": 10, "connections": 1}, "pairing": {"requests": 2, "operations": 2}},
     []),
    ({"capture": {"truncated_file": 1}}, [("the capture file is truncated", 1)]),
    ({"capture": {"stopped_before_end": 1}}, [("the capture file was not read to its end", 1)]),
    ({"capture": {"some_future_counter": 3}}, [("capture some_future_counter", 3)]),
    ({"writer": {"rows_rejected": 2}}, [("operations the profile could not hold", 2)]),
])
def test_every_counter_not_known_to_be_harmless_is_a_loss(health, expected):
    assert losses(health) == expected


CUT_VALUES = {"capture": {"holes": 2, "bytes_missing": 100, "truncated_bytes": 100, "truncated_events": 2},
              "parser": {"request_bytes_missing": 40, "request_bytes_missing_in_values": 40,
                         "response_bytes_missing": 60, "response_bytes_missing_in_values": 60}}


def test_holes_that_all_fell_inside_values_are_no_loss_and_any_other_hole_is():
    assert profile_losses(CUT_VALUES) == {}
    one_outside = {**CUT_VALUES, "parser": {**CUT_VALUES["parser"], "response_bytes_missing_in_values": 59}}
    assert set(profile_losses(one_outside)) == {("capture", "holes"), ("capture", "bytes_missing"),
                                                ("capture", "truncated_bytes"), ("capture", "truncated_events")}
    unseen_by_parsers = {**CUT_VALUES, "capture": {**CUT_VALUES["capture"], "bytes_missing": 101}}
    assert ("capture", "bytes_missing") in profile_losses(unseen_by_parsers)
    assert profile_losses({"capture": {"holes": 1, "truncated_events": 1}}) == {("capture", "holes"): 1,
                                                                          ("capture", "truncated_events"): 1}


def test_big_values_cut_by_the_ebpf_copy_limit_are_whole_rows_and_nothing_lost(memcached, tmp_path):
    """eBPF copies at most 16 KiB of a system call: the rest of a big value never reaches user space. The parsers
    know the value's length and keep their framing, so the rows are right; the recording used to be called lossy."""
    recording = Recording(tmp_path / "big.profile", memcached.port)
    client = Client((memcached.host, memcached.port), default_noreply=False)
    for size in (20_000, 100 << 10, 1 << 20):
        client.set(f"big{size}", b"B" * size)
        assert client.get(f"big{size}") == b"B" * size
    assert len(client.get_many([f"big{size}" for size in (20_000, 100 << 10)])) == 2
    client.close()
    recording.stop()
    health = recording.health()
    assert health["capture"]["truncated_bytes"] > 0
    assert profile_losses(health) == {}
    rows = read_profile(recording.out).to_pylist()
    assert [(row["command"], row["value_length"], row["status"]) for row in rows] == [
        ("set", 20_000, "stored"), ("get", 20_000, "hit"), ("set", 100 << 10, "stored"), ("get", 100 << 10, "hit"),
        ("set", 1 << 20, "stored"), ("get", 1 << 20, "hit"), ("get", 20_000, "hit"), ("get", 100 << 10, "hit")]


def test_a_disk_that_fills_during_a_recording_stops_it_in_one_line_keeping_what_was_written(memcached, tmp_path):
    with small_tmpfs(tmp_path, "1m") as disk:
        out = disk / "full.profile"
        recorder = subprocess.Popen([sys.executable, "-m", "membench", "record", "ebpf:any", str(out), "--port",
                                     str(memcached.port), "--quiet", "--duration", "30"],
                                    stderr=subprocess.PIPE, text=True)
        assert recorder.stderr is not None and recorder.stderr.readline().startswith("recording")
        client = Client((memcached.host, memcached.port), default_noreply=False, no_delay=True)
        deadline = time.monotonic() + 25
        number = 0
        while recorder.poll() is None and time.monotonic() < deadline:
            client.set(f"key:{number}", b"v" * (number % 300), noreply=False)
            client.get(f"key:{number // 2}")
            number += 1
            if number % 2000 == 0:
                time.sleep(0.1)  # a pace that fills the disk over several parts, not in the first
        client.close()
        _, err = recorder.communicate(timeout=60)
        assert recorder.returncode not in (0, None), "the recording stopped by itself, with an error"
        assert err.count("\n") == 1 and "No space left on device; recording stopped, the profile keeps the" in err
        assert "Traceback" not in err
        kept = ProfileReader(out)
        assert kept.num_rows > 0 and kept.metadata.complete is False
        # The profile says it too, for whoever reads it without this run's message; the failed part's room was
        # freed, so its health, a few KiB, is written.
        assert kept.metadata.health["writer"]["parts_not_written"] >= 1
        assert not [entry.name for entry in out.iterdir() if entry.name.endswith(".tmp")]


class _QuietSource:
    """A capture source that stays open and sees nothing, until stopped: the recorder's flush thread runs on."""

    name = "test:quiet"
    ports = (11211,)

    def __init__(self) -> None:
        from membench.capture.stream import CaptureHealth

        self.health = CaptureHealth()
        self._stopped = False

    def __iter__(self):
        deadline = time.monotonic() + 20
        while not self._stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        return iter(())

    def stop(self) -> None:
        self._stopped = True


def test_any_failure_in_the_flush_thread_stops_the_recording_in_one_line(tmp_path):
    from membench.errors import MembenchError
    from membench.profile.metadata import ProfileMetadata
    from membench.profile.writer import ProfileWriter
    from membench.record.anonymize import KeyHasher
    from membench.record.recorder import Recorder

    writer = ProfileWriter(tmp_path / "p", ProfileMetadata(source="test"))

    def broken_tick() -> None:
        raise RuntimeError("a bug in the writer")

    writer.tick = broken_tick
    started = time.monotonic()
    with pytest.raises(MembenchError) as error:
        Recorder(_QuietSource(), writer, KeyHasher.random()).run()
    assert time.monotonic() - started < 15, "the recording stopped instead of running on without a flush thread"
    assert "RuntimeError: a bug in the writer" in str(error.value) and "recording stopped" in str(error.value)


def test_a_recording_whose_messages_cannot_be_written_is_still_whole(tmp_path):
    """With stderr unwritable (`2>/dev/full`, a full disk behind `2>log`), record stopped at its first line, before
    reading anything: the messages are lost, not the profile, and the exit status tells the summary was not seen."""
    pcap = PCAP_CORPUS / "memcache_text_tcp_single_load_store.pcap"
    seen = run_membench("record", str(pcap), str(tmp_path / "seen.profile"), check=True)
    with open("/dev/full", "w") as full:
        command = [sys.executable, "-m", "membench", "record", str(pcap), str(tmp_path / "unseen.profile")]
        unseen = subprocess.run(command, stdout=subprocess.PIPE, stderr=full, timeout=120)
    assert unseen.returncode == 1
    assert "nothing lost" in seen.stderr
    assert read_profile(tmp_path / "unseen.profile").num_rows == read_profile(tmp_path / "seen.profile").num_rows > 0
    assert json.loads((tmp_path / "unseen.profile" / METADATA_FILE).read_text())["complete"] is True
