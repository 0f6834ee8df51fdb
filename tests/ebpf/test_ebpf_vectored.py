"""sendmsg/recvmsg where the capture reads the msghdr together with the iovec array after it, and where it cannot.

The capture reads a msghdr and the bytes after it in one copy, since memcached declares its iovec array right after
its msghdr. These tests place the msghdr and the iovecs themselves (libc through ctypes, in a page followed by an
inaccessible one) to exercise both that path and the fallback where the longer read faults.
"""

from __future__ import annotations

import ctypes
import mmap
import socket
import time
from collections.abc import Callable

import pytest

from tests.conftest import Memcached
from tests.ebpf.ebpf_support import Capture, by_client_port

pytestmark = pytest.mark.ebpf

_LIBC = ctypes.CDLL(None, use_errno=True)
_PAGE = mmap.PAGESIZE
_PROT_NONE = 0


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _GuardedPage:
    """One read-write page followed by one that faults: a msghdr at its end cannot be read past."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, 2 * _PAGE)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        if _LIBC.mprotect(ctypes.c_void_p(self.address + _PAGE), _PAGE, _PROT_NONE):
            raise OSError(ctypes.get_errno(), "mprotect")

    def message(self, msghdr_offset: int, iovec_offset: int, lengths: list[int]) -> tuple[int, list[int]]:
        """A msghdr at `msghdr_offset` whose iovecs (at `iovec_offset`) point at buffers of `lengths` bytes
        placed from offset 1024; returns the msghdr's address and the buffers' addresses."""
        buffers, position = [], self.address + 1024
        iovecs = (_Iovec * len(lengths)).from_address(self.address + iovec_offset)
        for index, length in enumerate(lengths):
            iovecs[index].base, iovecs[index].length = position, length
            buffers.append(position)
            position += length
        msghdr = _Msghdr.from_address(self.address + msghdr_offset)
        ctypes.memset(ctypes.addressof(msghdr), 0, ctypes.sizeof(_Msghdr))
        msghdr.iov, msghdr.iovlen = self.address + iovec_offset, len(lengths)
        return ctypes.addressof(msghdr), buffers


def _pieces(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


def _wait_queued(sock: socket.socket, length: int) -> None:
    deadline = time.monotonic() + 10
    while len(sock.recv(length, socket.MSG_PEEK)) < length:
        assert time.monotonic() < deadline, f"memcached did not send {length} bytes"
        time.sleep(0.001)


# (msghdr offset, iovec array offset) in the guarded page
_AFTER = (0, 64)  # iovecs where memcached has them: read in the msghdr's copy
_ELSEWHERE = (0, 512)
_AT_PAGE_END = (_PAGE - ctypes.sizeof(_Msghdr), 512)  # the longer read faults: the msghdr is read alone


@pytest.mark.parametrize("layout", [_AFTER, _ELSEWHERE, _AT_PAGE_END], ids=["after", "elsewhere", "page-end"])
def test_vectored_calls_are_captured_whatever_the_msghdr_layout(memcached: Memcached,
                                                                 capture: Callable[..., Capture],
                                                                 layout: tuple[int, int]) -> None:
    page = _GuardedPage()
    running = capture(ports=[memcached.port], side="client")
    sock = socket.create_connection(("127.0.0.1", memcached.port), timeout=10)
    # More iovecs than one batch of the capture's iovec walk (8), in both directions.
    request = b"set vectored 0 0 10\r\n0123456789\r\nget vectored\r\n"
    msghdr, buffers = page.message(*layout, _pieces(len(request), 4))
    ctypes.memmove(buffers[0], request, len(request))
    assert _LIBC.sendmsg(sock.fileno(), ctypes.c_void_p(msghdr), 0) == len(request)

    reply = b"STORED\r\nVALUE vectored 0 10\r\n0123456789\r\nEND\r\n"
    _wait_queued(sock, len(reply))
    msghdr, buffers = page.message(*layout, _pieces(len(reply), 3))
    assert _LIBC.recvmsg(sock.fileno(), ctypes.c_void_p(msghdr), 0) == len(reply)
    assert ctypes.string_at(buffers[0], len(reply)) == reply
    port = sock.getsockname()[1]
    sock.close()
    conn = by_client_port(running.finish())[port]

    assert conn.request == request
    assert conn.response == reply
