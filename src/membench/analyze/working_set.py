"""The working set window by window: distinct keys, their bytes, and one-hit wonders, from the miss-ratio curve's
key sample (SHARDS: every access of a fixed fraction of the keys), scaled by its rate; exact when the rate is 1.

Within a window, a key's bytes are the size of its latest recorded access there (a miss takes the size the key had
or will have, as for the curve); a one-hit wonder is a key accessed exactly once in the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class WorkingSet:
    window_s: int  # the time series' windows
    start_ns: int
    sample_rate: float  # 1: counted exactly
    distinct_keys: list[int]  # keys accessed in the window
    bytes: list[int]  # the sum of their sizes
    one_hit_wonders: list[int]  # keys accessed once in the window
    one_hit_wonder_ratio: list[float | None]  # of the window's distinct keys; None for an empty window


def working_set(keys: np.ndarray, by_key: np.ndarray, times: np.ndarray, sizes: np.ndarray, rate: float,
                start_ns: int, window_s: int, windows: int) -> WorkingSet:
    """`keys` (integer codes from 0), `times` and `sizes` of the sampled accesses, in recorded order; `by_key`
    lists each key's accesses together, in order."""
    window = np.clip((times - start_ns) // (window_s * 1_000_000_000), 0, max(windows - 1, 0)).astype(np.int64)
    # In key order a key's accesses keep their recorded order, so its windows ascend: each (key, window) group is
    # one run, whose last access is the latest.
    window, keys, sizes = window[by_key], keys[by_key], sizes[by_key]
    starts = np.ones(len(by_key), dtype=bool)
    starts[1:] = (window[1:] != window[:-1]) | (keys[1:] != keys[:-1])
    first = np.flatnonzero(starts)
    last = np.append(first[1:] - 1, len(by_key) - 1) if len(first) else first
    accesses = last - first + 1
    distinct = np.bincount(window[first], minlength=windows)
    size_sum = np.bincount(window[last], weights=sizes[last], minlength=windows)
    once = np.bincount(window[first][accesses == 1], minlength=windows)
    scale = 1.0 / rate
    return WorkingSet(
        window_s=window_s, start_ns=start_ns, sample_rate=rate,
        distinct_keys=[round(float(value) * scale) for value in distinct],
        bytes=[round(float(value) * scale) for value in size_sum],
        one_hit_wonders=[round(float(value) * scale) for value in once],
        one_hit_wonder_ratio=[None if total == 0 else round(float(single) / float(total), 6)
                              for single, total in zip(once, distinct, strict=True)],
    )
