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
from membench.replay.survey import WarmKeys
from membench.replay.targets import Target, connect_blocking

_CHUNK_KEYS = 2048
_CHUNK_BYTES = 16 << 20  # of values
_END = b"MN\r\n"


@dataclass
class WarmResult:
    keys: int = 0
    errors: int = 0  # sets the server refused (e.g. SERVER_ERROR out of memory)


def warm_up(warm: WarmKeys, keys: KeySynthesizer, continuum: Continuum, targets: list[Target],
            timeout: float) -> WarmResult:
    """Stores every key at its size, a chunk of keys at a time: memory holds one chunk's values, not all."""
    values = ValueSource()
    order = np.lexsort((warm.lengths, warm.hashes))
    hashes, lengths, sizes = warm.hashes[order], warm.lengths[order], warm.sizes[order].tolist()
    result = WarmResult(keys=len(warm))
    sockets: dict[int, socket.socket] = {}
    target = 0
    try:
        with contextlib.ExitStack() as opened:
            for start, end in _chunks(sizes):
                per_target: dict[int, list[bytes]] = {}
                for key, size in zip(keys.keys(hashes[start:end], lengths[start:end]), sizes[start:end],
                                     strict=True):
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


def _chunks(sizes: list[int]) -> Iterator[tuple[int, int]]:
    """(start, end) of the keys of each chunk: _CHUNK_KEYS keys, or fewer where their values would pass _CHUNK_BYTES
    (at least one)."""
    start, chunk_bytes = 0, 0
    for index, size in enumerate(sizes):
        if index > start and (index - start == _CHUNK_KEYS or chunk_bytes + size > _CHUNK_BYTES):
            yield start, index
            start, chunk_bytes = index, 0
        chunk_bytes += size
    if start < len(sizes):
        yield start, len(sizes)


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
