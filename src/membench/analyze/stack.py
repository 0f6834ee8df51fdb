"""LRU stack distances: for each access, how much data an LRU cache must hold for it to hit.

An LRU cache of C bytes still holds a key when the key itself and the distinct data touched since its previous
access fit in C (Mattson's stack property), so one pass gives the miss ratio at every cache size. The distance is
that amount: the latest size of each distinct key accessed since, plus the key's own size at its previous access,
in bytes and in objects. A key's first access has none (-1): a cold miss at any size.

This is the readable specification. Two Fenwick trees over access positions hold, at each key's latest access,
its size and a 1; a key's distance is the sum over the positions after its previous access. The compiled twin
(_stack.pyx) does the same in C, and the tests hold the two equal; MEMBENCH_NO_EXTENSIONS=1 selects this one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from membench.extensions import compiled

Distances = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def specification(keys: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, objects) distance per access; `keys` are dense ids 0..K-1 (int64), `sizes` their sizes (int64)."""
    count = len(keys)
    byte_tree = [0] * (count + 1)
    object_tree = [0] * (count + 1)
    last = dict[int, int]()
    by_bytes = np.full(count, -1, dtype=np.int64)
    by_objects = np.full(count, -1, dtype=np.int64)
    size_at = [0] * count
    for position, (key, size) in enumerate(zip(keys.tolist(), sizes.tolist(), strict=True)):
        previous = last.get(key)
        if previous is not None:
            by_bytes[position] = _sum(byte_tree, count) - _sum(byte_tree, previous)
            by_objects[position] = _sum(object_tree, count) - _sum(object_tree, previous)
            _add(byte_tree, previous + 1, -size_at[previous])
            _add(object_tree, previous + 1, -1)
        _add(byte_tree, position + 1, size)
        _add(object_tree, position + 1, 1)
        size_at[position] = size
        last[key] = position
    return by_bytes, by_objects


def _add(tree: list[int], index: int, delta: int) -> None:
    while index < len(tree):
        tree[index] += delta
        index += index & -index


def _sum(tree: list[int], index: int) -> int:
    """Sum of positions 1..index."""
    total = 0
    while index > 0:
        total += tree[index]
        index -= index & -index
    return total


_twin = compiled("membench.analyze._stack")
stack_distances: Distances = specification if _twin is None else _twin.stack_distances
