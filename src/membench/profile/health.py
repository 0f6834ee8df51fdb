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
    "parser": frozenset({"request_bytes_parsed", "response_bytes_parsed", "request_bytes_missing_in_values",
                         "response_bytes_missing_in_values"}),
    "pairing": frozenset({"requests", "operations"}),
}
# The parser's own view of holes repeats the capture's bytes_missing: counted once.
_REPEATED = frozenset({("parser", "request_bytes_missing"), ("parser", "response_bytes_missing")})


# The capture's counters of bytes it did not see: no loss when every one of them fell inside a value whose length
# the parsers knew (eBPF cuts a system call past its copy limit, which big values cross), so every unit is whole.
_HOLES = frozenset({("capture", "holes"), ("capture", "bytes_missing"), ("capture", "truncated_bytes"),
                    ("capture", "truncated_events")})


def losses(health: dict[str, dict[str, Any]]) -> dict[tuple[str, str], int]:
    """(section, counter) -> value for every non-zero counter of `health` that counts a loss."""
    found: dict[tuple[str, str], int] = {}
    harmless_holes = _holes_all_in_values(health)
    for section, counters in sorted(health.items()):
        for name, value in sorted(counters.items()):
            if (isinstance(value, int) and value > 0 and name not in _NOT_LOSSES.get(section, ())
                    and (section, name) not in _REPEATED and not (harmless_holes and (section, name) in _HOLES)):
                found[section, name] = value
    return found


def bytes_missing_in_values(health: dict[str, dict[str, Any]]) -> int:
    """Bytes the capture missed inside values whose lengths the parsers knew: no row lacks anything for them."""
    parser = health.get("parser", {})
    return int(parser.get("request_bytes_missing_in_values", 0) + parser.get("response_bytes_missing_in_values", 0))


def _holes_all_in_values(health: dict[str, dict[str, Any]]) -> bool:
    """Whether the parsers saw every byte the capture missed, and each fell inside a value."""
    parser = health.get("parser", {})
    missing = parser.get("request_bytes_missing", 0) + parser.get("response_bytes_missing", 0)
    capture_missing = health.get("capture", {}).get("bytes_missing", 0)
    return 0 < missing == bytes_missing_in_values(health) and capture_missing <= missing
