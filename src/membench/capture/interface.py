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
        self.health = CaptureHealth()
        self.interface = interface
        self.duration = duration
        self._stopping = False
        self._lib = _libpcap()
        self._handle = self._open(interface)
        self._link = self._lib.pcap_datalink(self._handle)

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
            lib.pcap_set_immediate_mode(handle, 1)
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
        """The captured frames, as (timestamp, bytes), a batch per wake-up, until stopped or the duration ends."""
        if not self._handle:
            raise MembenchError(f"capture on {self.interface} already ran: open a new source")
        lib = self._lib
        handle = self._handle
        fraction_ns = 1 if lib.pcap_get_tstamp_precision(handle) == _PCAP_TSTAMP_PRECISION_NANO else 1000
        selectable = lib.pcap_get_selectable_fd(handle)
        header = ctypes.POINTER(_PacketHeader)()
        data = ctypes.c_void_p()
        started = time.monotonic()
        deadline = started + self.duration if self.duration is not None else None
        next_stats = started + _LIVE_STATS_EVERY_S
        try:
            while not self._stopping:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if now >= next_stats:
                    self._read_stats()
                    next_stats = now + _LIVE_STATS_EVERY_S
                select.select([selectable], [], [], _LIVE_POLL_S if deadline is None else
                              min(_LIVE_POLL_S, deadline - now))
                batch = []
                while not self._stopping:
                    status = lib.pcap_next_ex(handle, ctypes.byref(header), ctypes.byref(data))
                    if status == 0:
                        break
                    if status < 0:
                        if status == -2:  # PCAP_ERROR_BREAK: nothing more will come
                            self._stopping = True
                            break
                        raise MembenchError(f"capture on {self.interface} failed: {self._error(handle)}")
                    packet = header.contents
                    batch.append((packet.seconds * 1_000_000_000 + packet.fraction * fraction_ns,
                                  ctypes.string_at(data, packet.captured)))
                yield batch
            self._read_stats()
        finally:
            lib.pcap_close(handle)
            self._handle = 0

    def _read_stats(self) -> None:
        stats = _PcapStats()
        if self._lib.pcap_stats(self._handle, ctypes.byref(stats)) == 0:
            self.health.dropped_events = stats.dropped + stats.interface_dropped
