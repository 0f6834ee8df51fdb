"""Where a replay sends its requests: memcached servers on TCP (HOST:PORT) or on unix sockets (unix:PATH).

A unix-socket server is named by its path with port 0 wherever a name is needed (ketama points, messages), as
libmemcached adds such a server; requests and replies are the same bytes on either transport.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import NamedTuple

from membench.errors import MembenchError

UNIX_PREFIX = "unix:"
DEFAULT_PORT = 11211


class Target(NamedTuple):
    host: str  # a host name or address; for a unix socket, its path
    port: int  # 0 for a unix socket

    @property
    def is_unix(self) -> bool:
        return self.port == 0

    def __str__(self) -> str:
        return f"{UNIX_PREFIX}{self.host}" if self.is_unix else f"{self.host}:{self.port}"


def parse_target(text: str) -> Target:
    """HOST:PORT, HOST (port 11211), [IPv6]:PORT, unix:PATH or an absolute PATH."""
    if text.startswith(UNIX_PREFIX) or text.startswith("/"):
        path = text.removeprefix(UNIX_PREFIX)
        if not path:
            raise MembenchError(f"bad --target {text!r}: expected unix:PATH")
        return Target(path, 0)
    host, sep, port = text.rpartition(":")
    if not sep:
        return Target(text, DEFAULT_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MembenchError(f"bad --target {text!r}: expected HOST:PORT or unix:PATH")
    return Target(host, int(port))


def connect_blocking(target: Target, timeout: float) -> socket.socket:
    """A connected blocking socket (for checks and the warm-up); OSError if the server is not there."""
    if not target.is_unix:
        return socket.create_connection((target.host, target.port), timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(target.host)
    except OSError:
        sock.close()
        raise
    return sock


async def connect(loop: asyncio.AbstractEventLoop, protocol: Callable[[], asyncio.Protocol],
                  target: Target) -> None:
    """Connect `protocol` (a replay link) to the target; OSError if the server is not there."""
    if target.is_unix:
        await loop.create_unix_connection(protocol, target.host)
    else:
        await loop.create_connection(protocol, target.host, target.port)
