"""A thin ctypes binding to the system libbpf.so.1: just what loading, configuring and attaching needs.

libbpf 1.x conventions apply: functions returning a pointer return NULL and set errno on failure; functions
returning int return a negative errno. Every failure becomes a one-line MembenchError; libbpf's own messages go
to the `membench.capture.ebpf.libbpf` logger (silent unless the application configures logging), and the
last warning is kept so an error can say what libbpf complained about.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from membench.errors import MembenchError

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

_LIBBPF_WARN, _LIBBPF_INFO = 0, 1
_LEVELS = {_LIBBPF_WARN: logging.WARNING, _LIBBPF_INFO: logging.INFO}

_MESSAGE_BYTES = 1 << 20
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


def _load_library() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        raise MembenchError(f"libbpf is missing ({exc}): install the libbpf1 package") from None


class _Libbpf:
    """The loaded library with argument and result types declared once."""

    def __init__(self) -> None:
        lib = _load_library()
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        p, i, s, u32, u64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint64
        signatures: dict[str, tuple[type | None, list[type]]] = {
            "bpf_object__open_file": (p, [s, p]),
            "bpf_object__load": (i, [p]),
            "bpf_object__close": (None, [p]),
            "bpf_object__find_map_by_name": (p, [p, s]),
            "bpf_object__next_program": (p, [p, p]),
            "bpf_program__name": (s, [p]),
            "bpf_program__section_name": (s, [p]),
            "bpf_program__attach_trace": (p, [p]),
            "bpf_link__destroy": (i, [p]),
            "bpf_map__fd": (i, [p]),
            "bpf_map__set_max_entries": (i, [p, u32]),
            "bpf_map__set_initial_value": (i, [p, p, ctypes.c_size_t]),
            "bpf_map_update_elem": (i, [i, p, p, u64]),
            "bpf_map_lookup_elem": (i, [i, p, p]),
            "libbpf_num_possible_cpus": (i, []),
            "libbpf_set_print": (p, [_PRINT_FN]),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(lib, name)
            function.restype = restype
            function.argtypes = argtypes
        self.lib = lib
        libc.vsnprintf.restype = ctypes.c_int
        libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        self.vsnprintf = libc.vsnprintf
        self.last_warning = ""
        # One buffer for every message (they arrive one at a time, during load): verifier logs can be long.
        self.message_buffer = ctypes.create_string_buffer(_MESSAGE_BYTES)
        # Kept as an attribute: libbpf holds only the C pointer, the Python callback must outlive it.
        self.print_callback = _PRINT_FN(self._print)
        lib.libbpf_set_print(self.print_callback)

    def _print(self, level: int, fmt: bytes, args: int) -> int:
        self.vsnprintf(self.message_buffer, _MESSAGE_BYTES, fmt, args)
        message = self.message_buffer.value.decode(errors="replace").rstrip()
        if level == _LIBBPF_WARN and message:
            self.last_warning = message.splitlines()[-1]
        logger.log(_LEVELS.get(level, logging.DEBUG), "%s", message)
        return 0


_instance: _Libbpf | None = None


def libbpf() -> _Libbpf:
    global _instance
    if _instance is None:
        _instance = _Libbpf()
    return _instance


def _failure(action: str, error: int) -> MembenchError:
    detail = os.strerror(abs(error))
    warning = libbpf().last_warning
    return MembenchError(f"{action} failed: {detail}" + (f" (libbpf: {warning})" if warning else ""))


def possible_cpus() -> int:
    count = libbpf().lib.libbpf_num_possible_cpus()
    if count <= 0:
        raise _failure("counting possible CPUs", count)
    return count


class BpfMap:
    """A map of a loaded (or about to be loaded) object."""

    def __init__(self, name: str, handle: int) -> None:
        self.name = name
        self._handle = handle

    @property
    def fd(self) -> int:
        return libbpf().lib.bpf_map__fd(self._handle)

    def set_max_entries(self, entries: int) -> None:
        """Resize before load (for a ring buffer: its size in bytes, a power-of-two number of pages)."""
        error = libbpf().lib.bpf_map__set_max_entries(self._handle, entries)
        if error < 0:
            raise _failure(f"sizing map {self.name} to {entries}", error)

    def set_initial_value(self, value: bytes) -> None:
        """The contents of a global variable's section (.rodata.*, .data.*), before the object is loaded."""
        error = libbpf().lib.bpf_map__set_initial_value(self._handle, value, len(value))
        if error:
            raise _failure(f"setting the initial value of {self.name}", error)

    def update(self, key: bytes, value: bytes) -> None:
        error = libbpf().lib.bpf_map_update_elem(self.fd, key, value, 0)
        if error < 0:
            raise _failure(f"updating map {self.name}", error)

    def lookup(self, key: bytes, value_size: int) -> bytes:
        value = ctypes.create_string_buffer(value_size)
        error = libbpf().lib.bpf_map_lookup_elem(self.fd, key, value)
        if error < 0:
            raise _failure(f"reading map {self.name}", error)
        return value.raw


class BpfLink:
    def __init__(self, handle: int) -> None:
        self._handle: int | None = handle

    def destroy(self) -> None:
        if self._handle is not None:
            libbpf().lib.bpf_link__destroy(self._handle)
            self._handle = None


class BpfProgram:
    def __init__(self, handle: int) -> None:
        self._handle = handle
        lib = libbpf().lib
        self.name: str = lib.bpf_program__name(handle).decode()
        self.section: str = lib.bpf_program__section_name(handle).decode()

    def attach_typed_tracepoint(self) -> BpfLink:
        """Attach a tp_btf program: the raw tracepoint calls it directly, with the event's typed arguments."""
        lib = libbpf().lib
        handle = lib.bpf_program__attach_trace(self._handle)
        if not handle:
            raise _failure(f"attaching {self.name} to raw tracepoint {self.section}", ctypes.get_errno())
        return BpfLink(handle)


class BpfObject:
    """An opened BPF ELF object; `load()` creates its maps and verifies its programs in the kernel."""

    def __init__(self, path: Path) -> None:
        lib = libbpf().lib
        self.path = path
        handle = lib.bpf_object__open_file(str(path).encode(), None)
        if not handle:
            raise _failure(f"opening BPF object {path}", ctypes.get_errno())
        self._handle: int | None = handle

    def _live_handle(self) -> int:
        if self._handle is None:
            raise MembenchError(f"BPF object {self.path} is already closed")
        return self._handle

    def load(self) -> None:
        error = libbpf().lib.bpf_object__load(self._live_handle())
        if error < 0:
            raise _failure(f"loading BPF object {self.path.name}", error)

    def map(self, name: str) -> BpfMap:
        handle = libbpf().lib.bpf_object__find_map_by_name(self._live_handle(), name.encode())
        if not handle:
            raise MembenchError(f"BPF object {self.path.name} has no map named {name}")
        return BpfMap(name, handle)

    def programs(self) -> Iterator[BpfProgram]:
        lib = libbpf().lib
        handle = lib.bpf_object__next_program(self._live_handle(), None)
        while handle:
            yield BpfProgram(handle)
            handle = lib.bpf_object__next_program(self._handle, handle)

    def close(self) -> None:
        """Free the object: its maps and programs go away with their last fd."""
        if self._handle is not None:
            libbpf().lib.bpf_object__close(self._handle)
            self._handle = None
