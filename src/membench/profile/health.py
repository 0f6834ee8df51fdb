"""Which of a profile's health counters count something lost: the one rule behind every "nothing lost".

Capture sources, parsers, pairing and the writer add counters as they learn to notice things; a counter is a loss
unless it is listed here as describing what was seen. So a counter added tomorrow is reported as a loss until
someone decides otherwise, and never hidden.
"""

from __future__ import annotations

from typing import Any

_NOT_LOSSES: dict[str, frozenset[str]] = {
    "capture": frozenset({"packets", "bytes_seen", "retransmitted_bytes", "out_of_order_segments", "connections",
                          "mid_stream_connections", "followed_processes_exited"}),
    "parser": frozenset({"request_bytes_parsed", "response_bytes_parsed"}),
    "pairing": frozenset({"requests", "operations"}),
}
# The parser's own view of holes repeats the capture's bytes_missing: counted once.
_REPEATED = frozenset({("parser", "request_bytes_missing"), ("parser", "response_bytes_missing")})


def losses(health: dict[str, dict[str, Any]]) -> dict[tuple[str, str], int]:
    """(section, counter) -> value for every non-zero counter of `health` that counts a loss."""
    found: dict[tuple[str, str], int] = {}
    for section, counters in sorted(health.items()):
        for name, value in sorted(counters.items()):
            if (isinstance(value, int) and value > 0 and name not in _NOT_LOSSES.get(section, ())
                    and (section, name) not in _REPEATED):
                found[section, name] = value
    return found
