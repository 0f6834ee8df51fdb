"""Warm-up: store, before measuring, the keys the recording found already present, at their recorded sizes.

Plain blocking sockets and pipelined `set ... noreply` in large writes: loading is a bulk transfer, not something
to measure. An `mn` at the end makes the server show it has handled every set before it.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from membench.errors import MembenchError
from membench.replay.ketama import Continuum
from membench.replay.keys import KeySynthesizer, ValueSource
from membench.replay.targets import Target, connect_blocking

_CHUNK_KEYS = 2048
_CHUNK_BYTES = 16 << 20  # of values
_END = b"MN\r\n"


@dataclass
class WarmResult:
    keys: int = 0
    errors: int = 0  # sets the server refused (e.g. SERVER_ERROR out of memory)


def warm_up(sizes: dict[tuple[int, int], int], keys: KeySynthesizer, continuum: Continuum,
            targets: list[Target], timeout: float) -> WarmResult:
    """Stores every key at its size, a chunk of keys at a time: memory holds one chunk's values, not all."""
    values = ValueSource()
    pairs = sorted(sizes.items())
    result = WarmResult(keys=len(sizes))
    sockets: dict[int, socket.socket] = {}
    target = 0
    try:
        with contextlib.ExitStack() as opened:
            for chunk in _chunks(pairs):
                hashes = np.fromiter((key_hash for (key_hash, _), _ in chunk), dtype=np.uint64, count=len(chunk))
                lengths = np.fromiter((length for (_, length), _ in chunk), dtype=np.int64, count=len(chunk))
                per_target: dict[int, list[bytes]] = {}
                for key, (_, size) in zip(keys.keys(hashes, lengths), chunk, strict=True):
                    request = b"set %s 0 0 %d noreply\r\n%s\r\n" % (key, size, values.value(size))
                    per_target.setdefault(continuum.server_of(key), []).append(request)
                for target, requests in per_target.items():
                    if target not in sockets:
                        sockets[target] = opened.enter_context(connect_blocking(targets[target], timeout))
                    sockets[target].sendall(b"".join(requests))
            for target, sock in sockets.items():
                result.errors += _finish(targets[target], sock)
    except OSError as error:
        raise MembenchError(f"warm-up: cannot load {targets[target]}: {error.strerror or error}") from None
    return result


def _chunks(pairs: list[tuple[tuple[int, int], int]]) -> Iterator[list[tuple[tuple[int, int], int]]]:
    """The pairs, _CHUNK_KEYS at a time, or fewer where their values would pass _CHUNK_BYTES (at least one)."""
    chunk: list[tuple[tuple[int, int], int]] = []
    chunk_bytes = 0
    for pair in pairs:
        if chunk and (len(chunk) == _CHUNK_KEYS or chunk_bytes + pair[1] > _CHUNK_BYTES):
            yield chunk
            chunk, chunk_bytes = [], 0
        chunk.append(pair)
        chunk_bytes += pair[1]
    if chunk:
        yield chunk


def _finish(target: Target, sock: socket.socket) -> int:
    """Waits for the server to have handled every set; gives the number it refused (their error lines)."""
    sock.sendall(b"mn\r\n")
    received = b""
    while not received.endswith(_END):
        chunk = sock.recv(65536)
        if not chunk:
            raise MembenchError(f"warm-up: {target} closed the connection")
        received += chunk
    return received.count(b"\r\n") - 1
