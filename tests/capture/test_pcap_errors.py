"""Bad input: every problem is a one-line MembenchError (or, for a cut-short capture, a health marker)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from membench.capture.interface import LiveInterfaceSource
from membench.capture.pcap import PcapFileSource
from membench.capture.stream import ConnectionClosed, Direction
from membench.errors import MembenchError
from tests.capture.capture_builders import (
    SERVER_PORT,
    Packet,
    TcpConversation,
    frame,
    pcapng_interface,
    pcapng_packet,
    pcapng_section,
    streams,
    write_pcap,
)

SECRET = b"get secret-key-bytes\r\n"


def conversation_frames() -> list[Packet]:
    c = TcpConversation()
    packets = [*c.handshake(), c.send(Direction.REQUEST, SECRET), c.send(Direction.RESPONSE, b"END\r\n")]
    return [Packet(1_000_000_000 + index * 1000, frame(1, packet)) for index, packet in enumerate(packets)]


def error_of(path: Path, ports: list[int] | None = None) -> str:
    with pytest.raises(MembenchError) as caught:
        list(PcapFileSource(path, ports or [SERVER_PORT]))
    message = str(caught.value)
    assert "\n" not in message
    assert "secret" not in message
    return message


def message_of(action: Callable[[], object]) -> str:
    with pytest.raises(MembenchError) as caught:
        action()
    return str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.pcap") == f"capture file not found: {tmp_path / 'nope.pcap'}"


def test_directory(tmp_path: Path) -> None:
    assert error_of(tmp_path) == f"capture file is a directory: {tmp_path}"


@pytest.mark.parametrize("content", [b"", b"hello, this is not a capture file at all", b"\x7fELF" + bytes(60)])
def test_not_a_capture(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(content)
    assert error_of(path) == f"not a pcap or pcapng file: {path}"


def test_truncated_headers(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00")
    assert error_of(path) == f"truncated pcap header in {path}"
    path.write_bytes(b"\x0a\x0d\x0d\x0a\x1c\0\0\0")
    assert error_of(path) == f"truncated pcapng header in {path}"
    path.write_bytes(b"\x0a\x0d\x0d\x0a\x1c\0\0\0\x11\x22\x33\x44" + bytes(16))
    assert error_of(path) == f"corrupt pcapng section header in {path}"


def test_bad_ports(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "c.pcap", 1, conversation_frames())
    assert message_of(lambda: PcapFileSource(path, [])) == "no memcached port given to capture"
    assert message_of(lambda: PcapFileSource(path, [70000])) == "invalid port 70000: ports are numbers from 1 to 65535"


def test_corrupt_pcap_record_raises_after_yielding_what_came_before(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "c.pcap", 1, conversation_frames())
    content = bytearray(path.read_bytes())
    records_before = sum(16 + len(p.data) for p in conversation_frames()[:4])
    struct.pack_into("<I", content, 24 + records_before + 8, 0x7FFFFFFF)  # the 5th record's captured length
    path.write_bytes(bytes(content))
    source = PcapFileSource(path, [SERVER_PORT])
    items = []
    with pytest.raises(MembenchError) as caught:
        items.extend(source)
    assert str(caught.value) == f"corrupt pcap record at byte {24 + records_before} of {path}"
    assert streams(items) == {(1, Direction.REQUEST): SECRET}
    assert isinstance(items[-1], ConnectionClosed)
    assert source.health.packets == 4


def test_pcap_cut_in_the_middle_of_a_packet_keeps_everything_before(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "c.pcap", 1, conversation_frames())
    content = path.read_bytes()
    for cut in (len(content) - 3, len(content) - len(conversation_frames()[-1].data) - 10):
        path.write_bytes(content[:cut])
        source = PcapFileSource(path, [SERVER_PORT])
        items = list(source)
        assert streams(items) == {(1, Direction.REQUEST): SECRET}
        assert isinstance(items[-1], ConnectionClosed)
        assert source.health.extra == {"truncated_file": 1}
        assert source.health.packets == 4


def pcapng_file(tmp_path: Path) -> tuple[Path, list[int]]:
    """A pcapng of the conversation, and the byte offset at which each packet block starts."""
    body = bytearray(pcapng_section() + pcapng_interface(1))
    starts = []
    for packet in conversation_frames():
        starts.append(len(body))
        body += pcapng_packet(packet)
    path = tmp_path / "c.pcapng"
    path.write_bytes(bytes(body))
    return path, starts


def test_pcapng_cut_short_keeps_everything_before(tmp_path: Path) -> None:
    path, starts = pcapng_file(tmp_path)
    content = path.read_bytes()
    path.write_bytes(content[:starts[-1] + 40])
    source = PcapFileSource(path, [SERVER_PORT])
    assert streams(source) == {(1, Direction.REQUEST): SECRET}
    assert source.health.extra == {"truncated_file": 1}


@pytest.mark.parametrize(("field_offset", "value", "what"), [
    (4, 13, "block"),  # total length not a multiple of 4
    (4, 8, "block"),  # shorter than a block header
    (-4, 9999, "block"),  # trailing length disagrees with the leading one
    (8, 5, "packet block"),  # interface 5 was never described
    (12, 0xFFFFFFFF, "packet block"),  # a timestamp past int64 nanoseconds (year 2262)
])
def test_corrupt_pcapng_block(tmp_path: Path, field_offset: int, value: int, what: str) -> None:
    path, starts = pcapng_file(tmp_path)
    content = bytearray(path.read_bytes())
    block = starts[4]
    block_end = starts[4] + struct.unpack_from("<I", content, block + 4)[0]
    struct.pack_into("<I", content, (block_end if field_offset < 0 else block) + field_offset, value)
    path.write_bytes(bytes(content))
    items = []
    with pytest.raises(MembenchError) as caught:
        items.extend(PcapFileSource(path, [SERVER_PORT]))
    assert str(caught.value) == f"corrupt pcapng {what} at byte {block} of {path}"
    assert streams(items) == {(1, Direction.REQUEST): SECRET}


def test_live_interface_errors() -> None:
    assert message_of(lambda: LiveInterfaceSource("nosuch0", [SERVER_PORT])) == "no such network interface: nosuch0"
    assert (message_of(lambda: LiveInterfaceSource("lo", [SERVER_PORT], duration=0))
            == "capture duration must be positive, not 0")
    assert message_of(lambda: LiveInterfaceSource("lo", [])) == "no memcached port given to capture"


@pytest.mark.parametrize("extensions", ["compiled", "specification"])
def test_timestamps_past_int64_nanoseconds_are_a_corrupt_block_in_both_twins(tmp_path: Path, extensions: str) -> None:
    """An interface's offset at int64's end (or ticks past it) once made `record` an internal error."""
    body = bytearray(pcapng_section() + pcapng_interface(1, tsoffset=-2**63))
    start = len(body)
    for packet in conversation_frames():
        body += pcapng_packet(packet)
    path = tmp_path / "c.pcapng"
    path.write_bytes(bytes(body))
    env = {**os.environ, "MEMBENCH_SALT": "x"}
    if extensions == "specification":
        env["MEMBENCH_NO_EXTENSIONS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "membench", "record", str(path), str(tmp_path / "p.profile"),
                           "--port", str(SERVER_PORT)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"membench: corrupt pcapng packet block at byte {start} of {path}; "
                                                    "the 0 operations before it are kept")
