"""`EbpfSource`: live socket-level capture with the committed capture.bpf.o, as a StreamSource.

Construction checks the environment, loads the object, fills the filter maps and attaches every tracepoint, so
traffic is captured from the moment the constructor returns (and errors surface before anything else runs).
Iteration drains the ring buffer straight from its shared memory mapping, in batches, without a ctypes call per
event. Everything is released when iteration ends, on `close()`, or by the kernel when the process dies: no
program or map is pinned.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import struct
import time
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

from membench.capture.ebpf import events
from membench.capture.ebpf.events import Counter, Side
from membench.capture.ebpf.libbpf import BpfLink, BpfObject, BpfProgram, possible_cpus
from membench.capture.ebpf.ring import Drained, decode_records
from membench.capture.stream import (
    CaptureHealth,
    StreamItem,
)
from membench.errors import MembenchError

OBJECT_PATH = Path(__file__).with_name("capture.bpf.o")
KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")

DEFAULT_RING_BYTES = 32 * 1024 * 1024
# Large enough for whole requests and multi-get replies of small items; larger values are cut (their headers,
# which carry the lengths, come first). Raising it costs ring space and copy time only for big payloads.
DEFAULT_COPY_LIMIT = 16384
# A client may hand the kernel a whole pipeline, or a multi-get of thousands of keys, in one send, and read many
# replies in one read: on the client side a read or write is copied in events of the copy limit, up to this many
# bytes.
CLIENT_CALL_COPY_BYTES = 1 << 20
# A server reads past its 16 KiB buffer in two cases: a value read into place, better cut (its length is in its
# header), and a multi-get line that outgrew the buffer, which memcached then doubles, so that its later reads are
# larger. This bound keeps multi-gets of 12,000 16-byte keys whole and copies at most 4x more of big values.
SERVER_CALL_COPY_BYTES = 1 << 16

# Bytes that moved just before stop() may not be in the ring yet (their program is still copying them); waiting
# this long before the last drain lets them land instead of being cut off.
STOP_GRACE_S = 0.05
# Each CPU wakes the consumer once it has written WAKEUP_BYTES since its last wakeup; below that, data is drained
# on this timer. Batching wakeups this way costs at most POLL_INTERVAL_S of latency and saves a wakeup per event.
# Many CPUs could fill the ring before any of them wakes it: the threshold shrinks with their number.
POLL_INTERVAL_S = 0.02
WAKEUP_BYTES = 256 * 1024
HEALTH_REFRESH_S = 0.5
# Records decoded before the consumer position is published back to the kernel (frees ring space).
BATCH_RECORDS = 4096

_CAP_SYS_ADMIN, _CAP_PERFMON, _CAP_BPF = 21, 38, 39

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


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
    _require_tracepoints()


# The tracepoints capture.bpf.o attaches to, as the kernel's BTF names their typed prototypes.
TRACEPOINTS = ("sock_recv_length", "sock_send_length", "inet_sock_set_state", "tcp_destroy_sock")


def _require_tracepoints() -> None:
    """A one-line error where the kernel lacks a tracepoint, instead of libbpf's log at load."""
    names = KERNEL_BTF.read_bytes()
    missing = [name for name in TRACEPOINTS if b"\0btf_trace_%s\0" % name.encode() not in names]
    if missing:
        raise MembenchError(f"the kernel has no {', '.join(missing)} tracepoint (sock_send_length came with "
                            "Linux 6.3): eBPF capture cannot run here; capture from pcap instead")


def _pidfd(pid: int) -> int:
    """A pidfd, which names this very process (not whatever reuses its pid later) and turns readable when it exits."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise MembenchError(f"no process with pid {pid}") from None


def _attach(program: BpfProgram) -> BpfLink:
    """Attach a program where its section says: `tp_btf/EVENT`, the only kind capture.bpf.o has."""
    kind, _, event = program.section.partition("/")
    if kind == "tp_btf" and event and "/" not in event:
        return program.attach_typed_tracepoint()
    raise MembenchError(f"unexpected program section {program.section} in {OBJECT_PATH.name}")


class RingConsumer(Protocol):
    """The compiled record pipeline's side of `EbpfSource.feed`: it decodes the ring's records itself (ring.py is
    its specification) and returns (consumer position, records, bytes seen, truncated events, truncated bytes,
    connections, mid-stream connections)."""

    def drain_ring(self, ring: mmap.mmap, data_start: int, consumer: int, producer: int, mask: int,
                   server_side: bool, limit: int) -> tuple[int, int, int, int, int, int, int]: ...


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
        self.live = True
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
        self._followed: list[int] = []  # a pidfd per followed process: readable once it has exited
        try:
            self._followed = [_pidfd(pid) for pid in self.pids]
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

    def _plain_pieces(self, copy_limit: int) -> int:
        call_bytes = SERVER_CALL_COPY_BYTES if self.side == Side.SERVER else CLIENT_CALL_COPY_BYTES
        return min(-(-call_bytes // copy_limit), 0xFFFF)

    def _start(self, ring_bytes: int, copy_limit: int) -> None:
        obj = self._live_object()
        ring_map = obj.map("events")
        ring_map.set_max_entries(ring_bytes)
        self._cpus = possible_cpus()
        obj.map("scratch").set_max_entries(self._cpus)
        realtime_offset = time.time_ns() - time.monotonic_ns()
        obj.map(events.CONFIG_SECTION).set_initial_value(events.CONFIG.pack(
            realtime_offset, copy_limit, min(WAKEUP_BYTES, ring_bytes // (4 * self._cpus)), self.side,
            1 if self.pids else 0, self._plain_pieces(copy_limit), b""))
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
            self._links.append(_attach(program))
        # Enabled only now, all programs at once: programs attached one by one while already active saw a busy
        # connection's reads before its writes, and pairing then stayed one reply behind for its whole life.
        obj.map(events.SWITCH_SECTION).update(_U32.pack(0), events.SWITCH.pack(1, b""))

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
        for fd in (self._wake_read, self._wake_write, *self._followed):
            if fd >= 0:
                os.close(fd)
        self._wake_read = self._wake_write = -1
        self._followed = []

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
        known: set[int] = set()
        for final in self._rounds():
            while self._drain_again((yield from self._drain(known)), final):
                pass

    def feed(self, pipeline: RingConsumer, lock: AbstractContextManager[object]) -> None:
        """Drain the ring straight into a compiled record pipeline (no Python object per record), under `lock`."""
        for final in self._rounds():
            while True:
                with lock:
                    drained = self._drain_into(pipeline)
                if not self._drain_again(drained, final):
                    break

    def _drain_again(self, drained: Drained | None, final: bool) -> bool:
        """Whether to drain another batch now. The ring's readiness is edge-triggered (see _rounds), so a wakeup
        drains until a batch comes back short (the ring had no more); the last round drains until nothing is left.
        A consumer that never catches up still stops when told to."""
        if drained is None:
            return False
        if final:
            return drained.records > 0
        return drained.records >= BATCH_RECORDS and not self._stopping

    def _rounds(self) -> Iterator[bool]:
        """Yields False whenever records may wait in the ring, then True once after the end (drain until empty)."""
        if self._ring is None:
            raise MembenchError("the eBPF capture is already closed")
        poller = select.epoll()
        # Edge-triggered: the ring reads as ready whenever it holds data, so a level-triggered poll returned at
        # once after nearly every drain (1,350 times a second under memcaslap, about 75 operations each) and the
        # program's batched wakeups (WAKEUP_BYTES) saved nothing. Now the consumer wakes at those wakeups, and at
        # the POLL_INTERVAL_S timer for what trickles in below them.
        poller.register(self._ring_fd, select.EPOLLIN | select.EPOLLET)
        poller.register(self._wake_read, select.EPOLLIN)
        alive = set(self._followed)
        for pidfd in alive:
            poller.register(pidfd, select.EPOLLIN)
        deadline = None if self.duration is None else time.monotonic() + self.duration
        next_refresh = 0.0
        try:
            while not self._stopping:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                ready = poller.poll(POLL_INTERVAL_S if deadline is None else min(POLL_INTERVAL_S, deadline - now))
                if alive and self._followed_exited(alive, {fd for fd, _ in ready}, poller):
                    break
                yield False
                if now >= next_refresh:
                    self._refresh_kernel_health()
                    next_refresh = now + HEALTH_REFRESH_S
            time.sleep(STOP_GRACE_S)
            yield True
            self._refresh_kernel_health()
        finally:
            poller.close()
            self.close()

    def _followed_exited(self, alive: set[int], ready: set[int], poller: select.epoll) -> bool:
        """Whether every followed process has now exited: nothing more can be recorded, so the capture ends (as
        `perf record -p` does), saying so in its health, rather than watching a pid that is gone."""
        for pidfd in alive & ready:
            poller.unregister(pidfd)
            alive.discard(pidfd)
        if alive:
            return False
        self.health.extra["followed_processes_exited"] = 1
        return True

    def _drain(self, known: set[int]) -> Generator[StreamItem, None, Drained | None]:
        """Yield the items of up to BATCH_RECORDS committed records, then hand their space back to the kernel.
        Returns what was consumed (None once closed)."""
        if self._ring is None or self._positions is None:
            return None
        consumer_position, producer_position = self._positions
        drained = yield from decode_records(self._ring, mmap.PAGESIZE, consumer_position[0], producer_position[0],
                                            self._ring_mask, self.side == Side.SERVER, known, BATCH_RECORDS)
        consumer_position[0] = drained.consumer
        self._count(drained)
        return drained

    def _drain_into(self, pipeline: RingConsumer) -> Drained | None:
        if self._ring is None or self._positions is None:
            return None
        consumer_position, producer_position = self._positions
        drained = Drained(*pipeline.drain_ring(self._ring, mmap.PAGESIZE, consumer_position[0], producer_position[0],
                                                      self._ring_mask, self.side == Side.SERVER, BATCH_RECORDS))
        consumer_position[0] = drained.consumer
        self._count(drained)
        return drained

    def _count(self, drained: Drained) -> None:
        health = self.health
        health.packets += drained.records
        health.bytes_seen += drained.bytes_seen
        health.connections += drained.connections
        health.mid_stream_connections += drained.mid_stream_connections
        if drained.truncated_events:
            health.extra["truncated_events"] = health.extra.get("truncated_events", 0) + drained.truncated_events
            health.extra["truncated_bytes"] = health.extra.get("truncated_bytes", 0) + drained.truncated_bytes
