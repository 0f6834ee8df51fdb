"""Distances on the profile's time axis that cannot overflow.

Timestamps are int64 nanoseconds, and a damaged or foreign profile may hold any of them: the distance between two
of them, taken in int64, can wrap around. Taken in uint64 it cannot, since both ends lie in int64.
"""

from __future__ import annotations

import numpy as np


def nanoseconds_since(timestamps_ns: np.ndarray, start_ns: int) -> np.ndarray:
    """Each timestamp's distance from `start_ns` (an int64 instant), in uint64; 0 for those before it."""
    start = np.int64(start_ns)
    return np.maximum(timestamps_ns, start).view(np.uint64) - start.view(np.uint64)
