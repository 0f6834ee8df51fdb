"""Warm-up: store, before measuring, the keys the recording found already present, at their recorded sizes.

Plain blocking sockets and pipelined `set ... noreply` in large writes: loading is a bulk transfer, not something
to measure. An `mn` at the end makes the server show it has handled every set before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from membench.errors import MembenchError
from membench.replay.ketama import Continuum
from membench.replay.keys import KeySynthesizer, ValueSource
from membench.replay.targets import Target, connect_blocking

_CHUNK_KEYS = 2048
_END = b"MN\r\n"


@dataclass
class WarmResult:
    keys: int = 0
    errors: int = 0  # sets the server refused (e.g. SERVER_ERROR out of memory)


def warm_up(sizes: dict[tuple[int, int], int], keys: KeySynthesizer, continuum: Continuum,
            targets: list[Target], timeout: float) -> WarmResult:
    values = ValueSource()
    per_target: list[list[bytes]] = [[] for _ in targets]
    pairs = sorted(sizes.items())
    hashes = np.fromiter((key_hash for (key_hash, _), _ in pairs), dtype=np.uint64, count=len(pairs))
    lengths = np.fromiter((length for (_, length), _ in pairs), dtype=np.int64, count=len(pairs))
    for key, (_, size) in zip(keys.keys(hashes, lengths), pairs, strict=True):
        request = b"set %s 0 0 %d noreply\r\n%s\r\n" % (key, size, values.value(size))
        per_target[continuum.server_of(key)].append(request)
    result = WarmResult(keys=len(sizes))
    for target, requests in zip(targets, per_target, strict=True):
        if requests:
            result.errors += _load(target, requests, timeout)
    return result


def _load(target: Target, requests: list[bytes], timeout: float) -> int:
    try:
        with connect_blocking(target, timeout) as sock:
            for start in range(0, len(requests), _CHUNK_KEYS):
                sock.sendall(b"".join(requests[start : start + _CHUNK_KEYS]))
            sock.sendall(b"mn\r\n")
            received = b""
            while not received.endswith(_END):
                chunk = sock.recv(65536)
                if not chunk:
                    raise MembenchError(f"warm-up: {target} closed the connection")
                received += chunk
    except OSError as error:
        raise MembenchError(f"warm-up: cannot load {target}: {error.strerror or error}") from None
    return received.count(b"\r\n") - 1
