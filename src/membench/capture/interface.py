"""`LiveInterfaceSource`: live packet capture on a network interface through libpcap (ctypes), as a StreamSource.

A kernel BPF filter keeps only the watched ports; packets go through the same decoding and reassembly as pcap
files (capture.demux); libpcap's drop counters become the health's dropped events.
"""

from __future__ import annotations

import ctypes
import itertools
import select
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Final

from membench.capture.demux import Demultiplexer, check_ports
from membench.capture.pcap import PacketConsumer
from membench.capture.stream import CaptureHealth, StreamItem
from membench.errors import MembenchError


class _PacketHeader(ctypes.Structure):
    _fields_ = (("seconds", ctypes.c_long), ("fraction", ctypes.c_long), ("captured", ctypes.c_uint32),
                ("length", ctypes.c_uint32))


class _BpfProgram(ctypes.Structure):
    _fields_ = (("length", ctypes.c_uint), ("instructions", ctypes.c_void_p))


class _PcapStats(ctypes.Structure):
    _fields_ = (("received", ctypes.c_uint), ("dropped", ctypes.c_uint), ("interface_dropped", ctypes.c_uint))


_PCAP_ERRBUF_SIZE: Final = 256
_PCAP_NETMASK_UNKNOWN: Final = 0xFFFFFFFF
_PCAP_TSTAMP_PRECISION_NANO: Final = 1
_PCAP_ERROR_NO_SUCH_DEVICE: Final = -5
_PCAP_ERROR_PERM_DENIED: Final = -8
_LIVE_SNAPLEN: Final = 262144
_LIVE_BUFFER_BYTES: Final = 32 << 20
_LIVE_POLL_S: Final = 0.1  # how often a blocked read looks at stop() and the duration
_LIVE_STATS_EVERY_S: Final = 1.0
_BATCH_PACKETS: Final = 4096  # packets read per wake-up at most, so a flood cannot keep the reader from yielding
_DRAIN_S: Final = 1.0  # after a stop, the longest spent reading what libpcap still holds


def _libpcap() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libpcap.so.0.8")
    except OSError:
        raise MembenchError("libpcap is not installed (Debian package libpcap0.8)") from None
    handle = ctypes.c_void_p
    for name, result, arguments in (
        ("pcap_create", handle, (ctypes.c_char_p, ctypes.c_char_p)),
        ("pcap_set_snaplen", ctypes.c_int, (handle, ctypes.c_int)),
        ("pcap_set_promisc", ctypes.c_int, (handle, ctypes.c_int)),
        ("pcap_set_timeout", ctypes.c_int, (handle, ctypes.c_int)),
        ("pcap_set_immediate_mode", ctypes.c_int, (handle, ctypes.c_int)),
        ("pcap_set_buffer_size", ctypes.c_int, (handle, ctypes.c_int)),
        ("pcap_set_tstamp_precision", ctypes.c_int, (handle, ctypes.c_int)),
        ("pcap_get_tstamp_precision", ctypes.c_int, (handle,)),
        ("pcap_activate", ctypes.c_int, (handle,)),
        ("pcap_geterr", ctypes.c_char_p, (handle,)),
        ("pcap_datalink", ctypes.c_int, (handle,)),
        ("pcap_compile", ctypes.c_int, (handle, ctypes.POINTER(_BpfProgram), ctypes.c_char_p, ctypes.c_int,
                                        ctypes.c_uint32)),
        ("pcap_setfilter", ctypes.c_int, (handle, ctypes.POINTER(_BpfProgram))),
        ("pcap_freecode", None, (ctypes.POINTER(_BpfProgram),)),
        ("pcap_setnonblock", ctypes.c_int, (handle, ctypes.c_int, ctypes.c_char_p)),
        ("pcap_get_selectable_fd", ctypes.c_int, (handle,)),
        ("pcap_next_ex", ctypes.c_int, (handle, ctypes.POINTER(ctypes.POINTER(_PacketHeader)),
                                        ctypes.POINTER(ctypes.c_void_p))),
        ("pcap_stats", ctypes.c_int, (handle, ctypes.POINTER(_PcapStats))),
        ("pcap_close", None, (handle,)),
    ):
        function = getattr(lib, name)
        function.restype = result
        function.argtypes = arguments
    return lib


class LiveInterfaceSource:
    """Captures on a network interface through libpcap, with a kernel BPF filter on the watched ports.

    The interface is opened (and errors raised) at construction. Iteration reads until `stop()`, until `duration`
    seconds have passed, or until the interface goes away; libpcap's drop counters become `health.dropped_events`.
    """

    def __init__(self, interface: str, ports: Sequence[int], duration: float | None = None) -> None:
        self.ports = check_ports(ports)
        if duration is not None and duration <= 0:
            raise MembenchError(f"capture duration must be positive, not {duration}")
        self.name = f"interface:{interface}"
        self.live = True
        self.health = CaptureHealth()
        self.interface = interface
        self.duration = duration
        self._stopping = False
        self._lib = _libpcap()
        self._handle = self._open(interface)
        self._link = self._lib.pcap_datalink(self._handle)
        nanoseconds = self._lib.pcap_get_tstamp_precision(self._handle) == _PCAP_TSTAMP_PRECISION_NANO
        self._fraction_ns = 1 if nanoseconds else 1000

    def stop(self) -> None:
        self._stopping = True

    def _open(self, interface: str) -> int:
        lib = self._lib
        errbuf = ctypes.create_string_buffer(_PCAP_ERRBUF_SIZE)
        handle = lib.pcap_create(interface.encode(), errbuf)
        if not handle:
            raise MembenchError(f"cannot capture on {interface}: {errbuf.value.decode(errors='replace')}")
        try:
            lib.pcap_set_snaplen(handle, _LIVE_SNAPLEN)
            lib.pcap_set_promisc(handle, 0)
            lib.pcap_set_timeout(handle, int(_LIVE_POLL_S * 1000))
            # Not immediate mode: there every packet takes a whole TPACKET_V3 block of the kernel's ring (a block
            # per snaplen), so a reader starved of CPU for a moment saw the ring overflow after a few hundred
            # packets. Blocks now fill up, handed over when full or after the timeout.
            lib.pcap_set_immediate_mode(handle, 0)
            lib.pcap_set_buffer_size(handle, _LIVE_BUFFER_BYTES)
            lib.pcap_set_tstamp_precision(handle, _PCAP_TSTAMP_PRECISION_NANO)
            status = lib.pcap_activate(handle)
            if status == _PCAP_ERROR_NO_SUCH_DEVICE:
                raise MembenchError(f"no such network interface: {interface}")
            if status == _PCAP_ERROR_PERM_DENIED:
                raise MembenchError(f"no permission to capture on {interface}: run as root or grant CAP_NET_RAW")
            if status < 0:
                raise MembenchError(f"cannot capture on {interface}: {self._error(handle)}")
            program = _BpfProgram()
            expression = " or ".join(f"tcp port {port} or udp port {port}" for port in self.ports)
            if lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, _PCAP_NETMASK_UNKNOWN) < 0:
                raise MembenchError(f"cannot compile capture filter on {interface}: {self._error(handle)}")
            try:
                if lib.pcap_setfilter(handle, ctypes.byref(program)) < 0:
                    raise MembenchError(f"cannot set capture filter on {interface}: {self._error(handle)}")
            finally:
                lib.pcap_freecode(ctypes.byref(program))
            if lib.pcap_setnonblock(handle, 1, errbuf) < 0:
                raise MembenchError(f"cannot capture on {interface}: {errbuf.value.decode(errors='replace')}")
        except MembenchError:
            lib.pcap_close(handle)
            raise
        return handle

    def _error(self, handle: int) -> str:
        return (self._lib.pcap_geterr(handle) or b"unknown libpcap error").decode(errors="replace")

    def __iter__(self) -> Iterator[StreamItem]:
        demux = Demultiplexer(self.ports, self.health)
        latest_ns = time.time_ns()
        for batch in self._batches():
            for timestamp_ns, frame in batch:
                self.health.packets += 1
                demux.packet(self._link, frame, 0, len(frame), timestamp_ns)
                latest_ns = timestamp_ns
            yield from demux.out
            demux.out.clear()
        demux.finish(max(latest_ns, time.time_ns()))
        yield from demux.out
        demux.out.clear()

    def feed(self, pipeline: PacketConsumer, lock: AbstractContextManager[object]) -> None:
        """The packets into a compiled record pipeline, which decodes and reassembles them itself (as for files:
        see PcapFileSource.feed), a batch per lock."""
        packets = pipeline.packet_feed(self.ports, self.health, itertools.count(1))
        latest_ns = time.time_ns()
        for batch in self._batches():
            with lock:
                for timestamp_ns, frame in batch:
                    packets.packet(self._link, frame, 0, len(frame), timestamp_ns)
            if batch:
                latest_ns = batch[-1][0]
        with lock:
            packets.finish(max(latest_ns, time.time_ns()))

    def _batches(self) -> Iterator[list[tuple[int, bytes]]]:
        """The captured frames, as (timestamp, bytes), a batch per wake-up, until stopped or the duration ends;
        what libpcap already holds then is still read (for at most _DRAIN_S), so Ctrl+C loses no captured packet."""
        if not self._handle:
            raise MembenchError(f"capture on {self.interface} already ran: open a new source")
        selectable = self._lib.pcap_get_selectable_fd(self._handle)
        started = time.monotonic()
        deadline = started + self.duration if self.duration is not None else None
        next_stats = started + _LIVE_STATS_EVERY_S
        drain_until: float | None = None
        try:
            while True:
                now = time.monotonic()
                if drain_until is None and (self._stopping or (deadline is not None and now >= deadline)):
                    drain_until = now + _DRAIN_S
                    time.sleep(_LIVE_POLL_S * 1.5)  # the kernel hands over a partly filled block at the timeout
                if now >= next_stats:
                    self._read_stats()
                    next_stats = now + _LIVE_STATS_EVERY_S
                if drain_until is None:
                    select.select([selectable], [], [], _LIVE_POLL_S if deadline is None else
                                  min(_LIVE_POLL_S, deadline - now))
                batch = self._available()
                if batch:
                    yield batch
                if drain_until is not None and (len(batch) < _BATCH_PACKETS or now >= drain_until):
                    break
            self._read_stats()
        finally:
            self._lib.pcap_close(self._handle)
            self._handle = 0

    def _available(self) -> list[tuple[int, bytes]]:
        """The frames libpcap holds now, up to _BATCH_PACKETS."""
        lib, handle = self._lib, self._handle
        header = ctypes.POINTER(_PacketHeader)()
        data = ctypes.c_void_p()
        batch: list[tuple[int, bytes]] = []
        while len(batch) < _BATCH_PACKETS:
            status = lib.pcap_next_ex(handle, ctypes.byref(header), ctypes.byref(data))
            if status == 0:
                break
            if status == -2:  # PCAP_ERROR_BREAK: nothing more will come
                self._stopping = True
                break
            if status < 0:
                raise MembenchError(f"capture on {self.interface} failed: {self._error(handle)}")
            packet = header.contents
            batch.append((packet.seconds * 1_000_000_000 + packet.fraction * self._fraction_ns,
                          ctypes.string_at(data, packet.captured)))
        return batch

    def _read_stats(self) -> None:
        stats = _PcapStats()
        if self._lib.pcap_stats(self._handle, ctypes.byref(stats)) == 0:
            self.health.dropped_events = stats.dropped + stats.interface_dropped
