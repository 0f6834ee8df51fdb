"""Synthetic operations with every column exercised (nulls, multi-key gets, quiet, several protocols), seeded."""

from __future__ import annotations

import random

from membench.profile.metadata import ProfileMetadata
from membench.profile.schema import Operation

START_NS = 1_700_000_000_123_456_789


def synthetic_operations(count: int, seed: int = 1, keys: int = 500, connections: int = 7) -> list[Operation]:
    """About `count` operations (a multi-get may overshoot by a few); one request may span several rows."""
    rng = random.Random(seed)
    ops: list[Operation] = []
    now = START_NS
    request = 0
    while len(ops) < count:
        request += 1
        now += rng.randrange(1, 40_000_000)  # up to 40 ms between requests: a few seconds of profile per 100 ops
        connection = rng.randrange(connections)
        protocol = rng.choice(("text", "text", "meta", "binary"))
        draw = rng.random()
        latency = rng.randrange(1, 3000)
        if draw < 0.5:
            command = rng.choice(("get", "get", "gets", "mg"))
            fanout = rng.choice((1, 1, 1, 3)) if command != "mg" else 1
            for index in range(fanout):
                key = rng.randrange(keys) ** 2 % keys  # uneven popularity
                hit = rng.random() < 0.7
                ops.append(Operation(now + index, connection, command, protocol, key * 2654435761 + 2**63,
                                     8 + key % 40, rng.randrange(1, 5000) if hit else None, None, None,
                                     "hit" if hit else "miss", latency, request, False))
        elif draw < 0.8:
            quiet = rng.random() < 0.2
            key = rng.randrange(keys)
            ops.append(Operation(now, connection, rng.choice(("set", "set", "add", "ms")), protocol,
                                 key * 2654435761 + 2**63, 8 + key % 40, rng.randrange(0, 100_000),
                                 rng.randrange(2**32), rng.choice((0, 60, -1)),
                                 "noreply" if quiet else "stored", None if quiet else latency, request, quiet))
        elif draw < 0.95:
            key = rng.randrange(keys)
            ops.append(Operation(now, connection, "delete", protocol, key * 2654435761 + 2**63, 8 + key % 40,
                                 None, None, None, rng.choice(("deleted", "not_found")), latency, request, False))
        else:
            ops.append(Operation(now, connection, rng.choice(("version", "stats")), protocol, None, None, None,
                                 None, None, rng.choice(("ok", "unanswered")), None, request, False))
    return ops


def metadata(**changes: object) -> ProfileMetadata:
    base = ProfileMetadata(source="synthetic", ports=[11211], salt_fingerprint="0123456789abcdef",
                           health={"capture": {"bytes_seen": 1000, "bytes_missing": 0, "holes": 0}})
    for name, value in changes.items():
        setattr(base, name, value)
    return base
