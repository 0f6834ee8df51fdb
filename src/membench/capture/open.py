"""Turns the SOURCE argument of `membench record` into a capture source."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from membench.capture.stream import StreamSource
from membench.errors import MembenchError

EBPF_PREFIX = "ebpf:"


def open_source(spec: str, ports: Sequence[int], side: str = "server",
                duration: float | None = None) -> StreamSource:
    """`ebpf:any`, `ebpf:pid=1,2`, an existing file (pcap/pcapng), or a network interface name."""
    if spec.startswith(EBPF_PREFIX):
        from membench.capture.ebpf.source import EbpfSource

        return EbpfSource(ports, pids=_ebpf_pids(spec[len(EBPF_PREFIX):]), side=side, duration=duration)
    path = Path(spec)
    if path.is_file():
        from membench.capture.pcap import PcapFileSource

        if duration is not None:
            raise MembenchError("--duration applies to live sources, not to a capture file")
        return PcapFileSource(path, ports)
    if path.exists():
        raise MembenchError(f"not a capture file: {spec}")
    if spec == "any" or Path("/sys/class/net", spec).exists():
        from membench.capture.interface import LiveInterfaceSource

        return LiveInterfaceSource(spec, ports, duration=duration)
    raise MembenchError(f"no such capture file or network interface: {spec}")


def _ebpf_pids(selector: str) -> tuple[int, ...]:
    if selector == "any":
        return ()
    if selector.startswith("pid="):
        try:
            pids = tuple(int(p) for p in selector[4:].split(","))
        except ValueError:
            pids = ()
        if pids and all(p > 0 for p in pids):
            return pids
    raise MembenchError(f"bad eBPF source 'ebpf:{selector}': use ebpf:any or ebpf:pid=PID[,PID...]")
