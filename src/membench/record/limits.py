"""The ranges of the profile's numeric columns, and how a value from the wire that falls outside them is stored.

A client may put any number on the wire (`touch k 99999999999999999999`, an exptime past int64, a forged VALUE
length) and a reply may come hours after its request; memcached rejects most such commands, but the recording must
still keep the row. A value that does not fit its column is stored as the nearest value that does (so "huge"
stays huge and "late" stays late), or as null where no nearer value means anything (negative lengths, client
flags, which are opaque bits). Each such field is counted, so the loss is visible in the profile's health.
Key lengths need no fitting: every parser refuses a key longer than memcached's 250 bytes.
"""

from __future__ import annotations

from membench.profile.schema import INT64_MAX, INT64_MIN, UINT32_MAX


def fits(value_length: int | None, flags: int | None, ttl: int | None, latency_us: int | None) -> bool:
    """Whether every field fits its column: the one check made per operation."""
    return ((value_length is None or 0 <= value_length <= UINT32_MAX)
            and (flags is None or 0 <= flags <= UINT32_MAX)
            and (ttl is None or INT64_MIN <= ttl <= INT64_MAX)
            and (latency_us is None or 0 <= latency_us <= UINT32_MAX))


def fit(value_length: int | None, flags: int | None, ttl: int | None,
        latency_us: int | None) -> tuple[int | None, int | None, int | None, int | None, int]:
    """The fields made to fit their columns, and how many of them had to change."""
    changed = 0
    if value_length is not None and not 0 <= value_length <= UINT32_MAX:
        value_length = UINT32_MAX if value_length > 0 else None
        changed += 1
    if flags is not None and not 0 <= flags <= UINT32_MAX:
        flags = None
        changed += 1
    if ttl is not None and not INT64_MIN <= ttl <= INT64_MAX:
        ttl = INT64_MAX if ttl > 0 else INT64_MIN
        changed += 1
    if latency_us is not None and not 0 <= latency_us <= UINT32_MAX:
        latency_us = UINT32_MAX if latency_us > 0 else None
        changed += 1
    return value_length, flags, ttl, latency_us, changed

