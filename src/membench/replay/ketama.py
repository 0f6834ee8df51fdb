"""Key to server mapping compatible with libmemcached's consistent (ketama) distribution.

A replay against several servers must put every key where a real libmemcached client (pylibmc) would, or the
replayed hit ratio and per-server load would not be the recorded ones. Two libmemcached flavours exist:

- `ketama` (MEMCACHED_BEHAVIOR_KETAMA, pylibmc `{"ketama": True}`): 100 points per server, each the default
  hash (Jenkins one-at-a-time) of "host:port-i"; keys use the same hash.
- `ketama_weighted` (MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, pylibmc `{"ketama_weighted": True}`): MD5, 160 points
  per server of equal weight, four 32-bit points from each digest of "host:port-i"; keys use the first four
  digest bytes.
In both, the ":port" part is left out when the port is 11211, as libmemcached does.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from enum import StrEnum

_DEFAULT_PORT = 11211
_POINTS_PER_SERVER = 100
_POINTS_PER_SERVER_WEIGHTED = 160
_POINTS_PER_DIGEST = 4
_MASK32 = 0xFFFFFFFF


class Distribution(StrEnum):
    KETAMA = "ketama"
    KETAMA_WEIGHTED = "ketama_weighted"


def one_at_a_time(data: bytes) -> int:
    """Jenkins' one-at-a-time hash as libhashkit computes it (its default hash)."""
    value = 0
    for byte in data:
        value = (value + byte) & _MASK32
        value = (value + (value << 10)) & _MASK32
        value ^= value >> 6
    value = (value + (value << 3)) & _MASK32
    value ^= value >> 11
    return (value + (value << 15)) & _MASK32


def _md5_point(digest: bytes, index: int) -> int:
    return int.from_bytes(digest[index * 4 : index * 4 + 4], "little")


class Continuum:
    """The ring of points of a list of (host, port) servers; `server_of(key)` is an index into that list."""

    def __init__(self, servers: Sequence[tuple[str, int]], distribution: Distribution = Distribution.KETAMA
                 ) -> None:
        self.distribution = distribution
        self.server_count = len(servers)
        points: list[tuple[int, int]] = []
        for index, (host, port) in enumerate(servers):
            prefix = host if port == _DEFAULT_PORT else f"{host}:{port}"
            if distribution is Distribution.KETAMA_WEIGHTED:
                for i in range(_POINTS_PER_SERVER_WEIGHTED // _POINTS_PER_DIGEST):
                    digest = hashlib.md5(f"{prefix}-{i}".encode()).digest()
                    points.extend((_md5_point(digest, x), index) for x in range(_POINTS_PER_DIGEST))
            else:
                points.extend(
                    (one_at_a_time(f"{prefix}-{i}".encode()), index) for i in range(_POINTS_PER_SERVER)
                )
        # libmemcached sorts by point value only; ties keep insertion order (server order), as a stable sort does.
        points.sort(key=lambda point: point[0])
        self._values = [value for value, _ in points]
        self._servers = [server for _, server in points]

    def key_hash(self, key: bytes) -> int:
        if self.distribution is Distribution.KETAMA_WEIGHTED:
            return _md5_point(hashlib.md5(key).digest(), 0)
        return one_at_a_time(key)

    def server_of(self, key: bytes) -> int:
        if self.server_count == 1:
            return 0
        position = bisect.bisect_left(self._values, self.key_hash(key))
        return self._servers[position if position < len(self._servers) else 0]
