"""`EbpfSource`: live socket-level capture with the committed capture.bpf.o, as a StreamSource.

Construction checks the environment, loads the object, fills the filter maps and attaches every tracepoint, so
traffic is captured from the moment the constructor returns (and errors surface before anything else runs).
Iteration drains the ring buffer straight from its shared memory mapping, in batches, without a ctypes call per
event. Everything is released when iteration ends, on `close()`, or by the kernel when the process dies: no
program or map is pinned.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import mmap
import os
import select
import socket
import struct
import time
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Literal

from membench.capture.ebpf import events
from membench.capture.ebpf.events import Counter, EventFlag, EventType, Side
from membench.capture.ebpf.libbpf import BpfLink, BpfObject, possible_cpus
from membench.capture.stream import (
    CaptureHealth,
    ConnectionClosed,
    ConnectionOpened,
    Direction,
    Endpoint,
    StreamChunk,
    StreamItem,
    Transport,
)
from membench.errors import MembenchError

OBJECT_PATH = Path(__file__).with_name("capture.bpf.o")
TRACEFS = Path("/sys/kernel/tracing")
KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")

DEFAULT_RING_BYTES = 32 * 1024 * 1024
# Large enough for whole requests and multi-get replies of small items; larger values are cut (their headers,
# which carry the lengths, come first). Raising it costs ring space and copy time only for big payloads.
DEFAULT_COPY_LIMIT = 16384

# Syscalls that finished just before stop() may not have reached their sys_exit tracepoint yet; waiting this
# long before the last drain lets them land instead of being cut off.
STOP_GRACE_S = 0.05
# The kernel wakes the consumer only when WAKEUP_BYTES wait in the ring; below that, data is drained on this
# timer. Batching wakeups this way costs at most POLL_INTERVAL_S of latency and saves a wakeup per event.
POLL_INTERVAL_S = 0.02
WAKEUP_BYTES = 256 * 1024
HEALTH_REFRESH_S = 0.5
# Records decoded before the consumer position is published back to the kernel (frees ring space).
BATCH_RECORDS = 4096

_CAP_SYS_ADMIN, _CAP_PERFMON, _CAP_BPF = 21, 38, 39

_RINGBUF_BUSY = 1 << 31
_RINGBUF_DISCARD = 1 << 30
_RINGBUF_HEADER = 8
_U32 = struct.Struct("<I")
# The kernel's 8-byte record header (length with busy/discard bits; its page offset is skipped) followed by our
# event header, with the fields the consumer does not use skipped as padding: one unpack per record, no int
# objects made for nothing. Fields of a busy record are garbage and are not used.
_SKIPPED_FIELDS = {"tgid", "fd", "syscall"}
_RECORD = struct.Struct("<I4x" + "".join(f"{struct.calcsize('<' + code)}x" if name in _SKIPPED_FIELDS else code
                                         for name, code in events.EVENT_LAYOUT))
_U64 = struct.Struct("<Q")

# (side, socket direction) -> stream direction from memcached's point of view.
_DIRECTIONS = {
    Side.SERVER: (Direction.REQUEST, Direction.RESPONSE),
    Side.CLIENT: (Direction.RESPONSE, Direction.REQUEST),
}


def _effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_environment() -> None:
    """Raise a one-line MembenchError when this process or kernel cannot run the capture."""
    caps = _effective_capabilities()
    has_bpf = caps & (1 << _CAP_BPF) and caps & (1 << _CAP_PERFMON)
    if not (has_bpf or caps & (1 << _CAP_SYS_ADMIN)):
        raise MembenchError("eBPF capture needs root (or CAP_BPF and CAP_PERFMON): run membench with sudo")
    if not KERNEL_BTF.exists():
        raise MembenchError(f"the kernel has no BTF ({KERNEL_BTF} is missing): eBPF capture needs "
                            "a kernel built with CONFIG_DEBUG_INFO_BTF=y; capture from pcap instead")
    _ensure_tracefs()


def _ensure_tracefs() -> None:
    """libbpf finds tracepoint ids in tracefs, which some systems leave unmounted: mount it (we are root)."""
    if not (TRACEFS / "events").is_dir():
        try:
            TRACEFS.mkdir(parents=True, exist_ok=True)
            _mount_tracefs()
        except OSError as exc:
            raise MembenchError(f"tracefs is not mounted and mounting it failed ({os.strerror(exc.errno or 0)}): "
                                f"run `mount -t tracefs nodev {TRACEFS}` as root") from None
    if not (TRACEFS / "events" / "syscalls").is_dir():
        raise MembenchError("the kernel has no syscall tracepoints (CONFIG_FTRACE_SYSCALLS): "
                            "eBPF capture cannot run here; capture from pcap instead")


def _mount_tracefs() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mount(b"nodev", str(TRACEFS).encode(), b"tracefs", 0, None) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _endpoint(family: int, address: bytes, port: int) -> Endpoint:
    if family == socket.AF_INET:
        return Endpoint(str(ipaddress.IPv4Address(address[:4])), port)
    ip = ipaddress.IPv6Address(address)
    return Endpoint(str(ip.ipv4_mapped or ip), port)


class EbpfSource:
    """Capture the bytes of TCP connections on `ports`, seen from inside the processes' syscalls.

    side="server" watches sockets whose local port is one of `ports` (run it where memcached runs); "client"
    watches sockets whose remote port is (run it where the clients run). `pids` limits capture to those
    processes. `duration` ends iteration after that many seconds.
    """

    def __init__(
        self,
        ports: Sequence[int],
        pids: Sequence[int] = (),
        side: Literal["server", "client"] = "server",
        duration: float | None = None,
        ring_bytes: int = DEFAULT_RING_BYTES,
        copy_limit: int = DEFAULT_COPY_LIMIT,
    ) -> None:
        self.ports = tuple(ports)
        self.pids = tuple(pids)
        self.side = Side.CLIENT if side == "client" else Side.SERVER
        self.duration = duration
        self.name = "ebpf:" + (",".join(map(str, self.pids)) if self.pids else "any")
        self.health = CaptureHealth()
        self._validate(ring_bytes, copy_limit)
        check_environment()

        self._stopping = False
        self._wake_read = self._wake_write = -1
        self._links: list[BpfLink] = []
        self._object: BpfObject | None = None
        self._consumer_page: mmap.mmap | None = None
        self._ring: mmap.mmap | None = None
        self._positions: tuple[memoryview, memoryview] | None = None
        try:
            self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._object = BpfObject(OBJECT_PATH)
            self._start(ring_bytes, copy_limit)
        except BaseException:
            self.close()
            raise

    def _validate(self, ring_bytes: int, copy_limit: int) -> None:
        if not self.ports:
            raise MembenchError("eBPF capture needs at least one port to watch")
        if len(self.ports) > events.MAX_PORTS:
            raise MembenchError(f"eBPF capture watches at most {events.MAX_PORTS} ports")
        if any(not 0 < port < 65536 for port in self.ports):
            raise MembenchError("ports must be between 1 and 65535")
        if len(self.pids) > events.MAX_PIDS:
            raise MembenchError(f"eBPF capture follows at most {events.MAX_PIDS} pids")
        for pid in self.pids:
            if pid <= 0 or not Path(f"/proc/{pid}").is_dir():
                raise MembenchError(f"no process with pid {pid}")
        page = mmap.PAGESIZE
        if ring_bytes < page or ring_bytes & (ring_bytes - 1):
            raise MembenchError(f"ring buffer size must be a power of two of at least {page} bytes")
        if not 0 < copy_limit <= events.COPY_MAX:
            raise MembenchError(f"copy limit must be between 1 and {events.COPY_MAX} bytes")

    def _start(self, ring_bytes: int, copy_limit: int) -> None:
        obj = self._live_object()
        ring_map = obj.map("events")
        ring_map.set_max_entries(ring_bytes)
        self._cpus = possible_cpus()
        obj.map("scratch").set_max_entries(self._cpus)
        obj.load()

        ports = obj.map("watched_ports")
        for port in self.ports:
            ports.update(events.PORT_KEY.pack(port), events.PRESENT)
        target_pids = obj.map("target_pids")
        for pid in self.pids:
            target_pids.update(events.PID_KEY.pack(pid), events.PRESENT)
        self._counters = obj.map("counters")

        page = mmap.PAGESIZE
        self._consumer_page = mmap.mmap(ring_map.fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        # The data pages are mapped twice in a row, so a record that wraps around reads as one slice.
        self._ring = mmap.mmap(ring_map.fd, page + 2 * ring_bytes, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        # The kernel reads consumer_pos at any moment: it must change with one 8-byte store. struct.pack_into
        # zero-fills its target before writing, so the kernel could see 0, take the ring for full and drop the
        # event (a few in 100000 under load); a 'Q' memoryview item assignment is a single aligned store.
        self._positions = (memoryview(self._consumer_page).cast("Q"), memoryview(self._ring)[:8].cast("Q"))
        self._ring_fd = ring_map.fd
        self._ring_mask = ring_bytes - 1

        for program in obj.programs():
            kind, _, rest = program.section.partition("/")
            category, _, event = rest.partition("/")
            if kind != "tracepoint" or not event:
                raise MembenchError(f"unexpected program section {program.section} in {OBJECT_PATH.name}")
            self._links.append(program.attach_tracepoint(category, event))
        # Enabled only now, all programs at once: programs attached one by one while already active saw a busy
        # connection's reads before its writes, and pairing then stayed one reply behind for its whole life.
        realtime_offset = time.time_ns() - time.monotonic_ns()
        obj.map("config").update(
            _U32.pack(0),
            events.CONFIG.pack(realtime_offset, copy_limit, min(WAKEUP_BYTES, ring_bytes // 4), self.side,
                               1 if self.pids else 0, 1, b""),
        )

    def _live_object(self) -> BpfObject:
        if self._object is None:
            raise MembenchError("the eBPF capture is already closed")
        return self._object

    def __enter__(self) -> EbpfSource:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def stop(self) -> None:
        """Ask iteration to end after a last drain. Only sets a flag and writes to a pipe: signal-safe."""
        self._stopping = True
        if self._wake_write < 0:
            return  # already closed: iteration is over
        # A full pipe means a wakeup is already pending.
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"\0")

    def close(self) -> None:
        """Detach and free everything. Idempotent."""
        if self._links:
            # Each detach waits for a kernel grace period (~70 ms); overlapping them halves the wait.
            with ThreadPoolExecutor(len(self._links)) as pool:
                list(pool.map(BpfLink.destroy, self._links))
            self._links.clear()
        if self._positions is not None:
            for view in self._positions:
                view.release()
            self._positions = None
        for mapping in (self._ring, self._consumer_page):
            if mapping is not None:
                mapping.close()
        self._ring = self._consumer_page = None
        if self._object is not None:
            self._object.close()
            self._object = None
        for fd in (self._wake_read, self._wake_write):
            if fd >= 0:
                os.close(fd)
        self._wake_read = self._wake_write = -1

    def kernel_counters(self) -> dict[Counter, int]:
        """Sum the per-CPU counters of the kernel side (while the capture is open)."""
        self._live_object()
        totals = {}
        for counter in Counter:
            raw = self._counters.lookup(_U32.pack(counter), self._cpus * 8)
            totals[counter] = sum(value for (value,) in _U64.iter_unpack(raw))
        return totals

    def _refresh_kernel_health(self) -> None:
        counters = self.kernel_counters()
        health = self.health
        health.dropped_events = counters[Counter.DROPPED_EVENTS]
        health.extra["dropped_bytes"] = counters[Counter.DROPPED_BYTES]
        health.extra["untracked_connections"] = counters[Counter.TABLE_FULL]
        health.bytes_missing = health.extra.get("truncated_bytes", 0) + counters[Counter.DROPPED_BYTES]
        health.holes = health.extra.get("truncated_events", 0) + counters[Counter.DROPPED_EVENTS]

    def __iter__(self) -> Iterator[StreamItem]:
        if self._ring is None:
            raise MembenchError("the eBPF capture is already closed")
        poller = select.epoll()
        poller.register(self._ring_fd, select.EPOLLIN)
        poller.register(self._wake_read, select.EPOLLIN)
        deadline = None if self.duration is None else time.monotonic() + self.duration
        next_refresh = 0.0
        known: set[int] = set()
        try:
            while not self._stopping:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                poller.poll(POLL_INTERVAL_S if deadline is None else min(POLL_INTERVAL_S, deadline - now))
                yield from self._drain(known)
                if now >= next_refresh:
                    self._refresh_kernel_health()
                    next_refresh = now + HEALTH_REFRESH_S
            time.sleep(STOP_GRACE_S)
            while (yield from self._drain(known)):
                pass
            self._refresh_kernel_health()
        finally:
            poller.close()
            self.close()

    def _drain(self, known: set[int]) -> Generator[StreamItem, None, bool]:
        """Yield the items of up to BATCH_RECORDS committed records, then hand their space back to the kernel.

        Returns whether any record was consumed. Items are yielded as they are decoded, not gathered in a list:
        a consumer that drops each item before the next leaves the cyclic GC nothing to do, where a batch of
        thousands of live tuples made it run collections over them (about a third of the per-record cost).
        """
        ring = self._ring
        positions = self._positions
        if ring is None or positions is None:
            return False
        consumer_position, producer_position = positions
        mask = self._ring_mask
        base = mmap.PAGESIZE + _RINGBUF_HEADER
        directions = _DIRECTIONS[self.side]
        unpack_record = _RECORD.unpack_from
        event_size = events.EVENT.size
        health = self.health
        records = truncated_events = truncated_bytes = bytes_seen = 0
        # Plain ints and tuple.__new__: enum attribute lookups and the namedtuple's Python-level __new__ would
        # each cost about as much as the rest of the per-event work.
        data_kind, open_kind, close_kind = int(EventType.DATA), int(EventType.OPEN), int(EventType.CLOSE)
        new_tuple = tuple.__new__

        start_position = consumer = consumer_position[0]
        producer = producer_position[0]
        while consumer < producer and records < BATCH_RECORDS:
            position = base + (consumer & mask)
            length, timestamp, conn, offset, moved, copied, kind, direction, flags = unpack_record(
                ring, position - _RINGBUF_HEADER)
            if length & _RINGBUF_BUSY:
                break
            consumer += ((length & ~_RINGBUF_DISCARD) + _RINGBUF_HEADER + 7) & ~7
            if length & _RINGBUF_DISCARD:
                continue
            records += 1
            if kind == data_kind:
                if conn not in known:
                    # Its open event was dropped (ring full): announce it without addresses.
                    known.add(conn)
                    yield ConnectionOpened(conn, None, None, Transport.TCP, timestamp, True)
                    health.connections += 1
                    health.mid_stream_connections += 1
                start = position + event_size
                yield new_tuple(StreamChunk, (conn, directions[direction], offset, ring[start:start + copied],
                                              moved, timestamp))
                bytes_seen += copied
                if copied < moved:
                    truncated_events += 1
                    truncated_bytes += moved - copied
            elif kind == open_kind:
                known.add(conn)
                yield self._opened(ring, position + event_size, conn, timestamp, flags)
            elif kind == close_kind and conn in known:
                known.discard(conn)
                yield ConnectionClosed(conn, timestamp)
        consumer_position[0] = consumer

        health.packets += records
        health.bytes_seen += bytes_seen
        if truncated_events:
            health.extra["truncated_events"] = health.extra.get("truncated_events", 0) + truncated_events
            health.extra["truncated_bytes"] = health.extra.get("truncated_bytes", 0) + truncated_bytes
        return consumer != start_position

    def _opened(self, ring: mmap.mmap, position: int, conn: int, timestamp: int, flags: int) -> ConnectionOpened:
        local_addr, remote_addr, local_port, remote_port, family, _ = events.OPEN_INFO.unpack_from(ring, position)
        local = _endpoint(family, local_addr, local_port)
        remote = _endpoint(family, remote_addr, remote_port)
        client, server = (remote, local) if self.side == Side.SERVER else (local, remote)
        mid_stream = bool(flags & EventFlag.MID_STREAM)
        self.health.connections += 1
        self.health.mid_stream_connections += mid_stream
        return ConnectionOpened(conn, client, server, Transport.TCP, timestamp, mid_stream)
