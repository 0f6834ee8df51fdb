"""Which keys the survey's pass over the whole profile has met already.

A profile may hold tens of millions of distinct keys, and the survey must tell for each row whether its key (hash
and length) is met for the first time: that row says whether the key was there before the recording touched it.
This class, a set of pairs, is the readable specification; its compiled twin (_seen.pyx, which `new_seen_keys`
selects) keeps the pairs in one flat table of 16 bytes a slot, with no Python object per key.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from membench import extensions

MAX_LENGTH = 0xFFFF  # the profile's key_length column is 16 bits


class KeysMet(Protocol):
    def first_met(self, hashes: np.ndarray, lengths: np.ndarray) -> np.ndarray: ...


class SeenKeys:
    """The (hash, length) pairs met so far."""

    def __init__(self) -> None:
        self._pairs: set[tuple[int, int]] = set()

    def first_met(self, hashes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """For each pair in order, whether it is met here for the first time; every pair is known afterwards."""
        check_lengths(lengths)
        met = np.zeros(len(hashes), dtype=bool)
        pairs = self._pairs
        for index, pair in enumerate(zip(hashes.tolist(), lengths.tolist(), strict=True)):
            if pair not in pairs:
                pairs.add(pair)
                met[index] = True
        return met


def check_lengths(lengths: np.ndarray) -> None:
    if len(lengths) and (int(lengths.min()) < 0 or int(lengths.max()) > MAX_LENGTH):
        raise ValueError(f"key lengths are 0 to {MAX_LENGTH}")


def new_seen_keys() -> KeysMet:
    """The compiled twin where it is built (and not switched off), else the specification."""
    twin = extensions.compiled("membench.replay._seen")
    keys: KeysMet = twin.SeenKeys() if twin is not None else SeenKeys()
    return keys
