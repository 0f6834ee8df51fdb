"""Keys and values made up from what a profile kept of them: a 64-bit keyed hash, a length, a value size.

The same profile gives the same keys on every run and machine: a key depends only on its hash, its length and
(for short keys) the other short keys of the profile. Keys use the 94 printable ASCII characters other than
space, so they are valid in every protocol. From 10 characters on, the key's first 10 characters are the hash in
base 94 (94**10 > 2**64), so distinct hashes always give distinct keys. Shorter key spaces are small (94 keys of
one character) and two hashes can land on the same key: those keys are assigned up front, in hash order, each
probing linearly for the next free key; only when a length has more distinct hashes than keys do some share one,
and `merged` counts them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from membench import extensions

ALPHABET = bytes(range(0x21, 0x7F))
_ALPHABET_ARRAY = np.frombuffer(ALPHABET, dtype=np.uint8)
_BASE = len(ALPHABET)
INJECTIVE_LENGTH = 10
MAX_KEY_LENGTH = 250
_MASK64 = 0xFFFFFFFFFFFFFFFF
_DOUBLED_VALUES = 64 << 20


def _mix(value: int) -> int:
    """splitmix64's finalizer: spreads similar hashes over the whole short-key space."""
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & _MASK64
    return value ^ (value >> 31)


def _mix_array(values: np.ndarray) -> np.ndarray:
    """`_mix` over a uint64 array (numpy's uint64 arithmetic wraps modulo 2**64, as the mask does)."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _digit_matrix(numbers: np.ndarray, length: int) -> np.ndarray:
    """`_digits` of every number of a uint64 array: one row of `length` characters each."""
    out = np.empty((len(numbers), length), dtype=np.uint8)
    rest = numbers.copy()
    base = np.uint64(_BASE)
    for index in range(length - 1, -1, -1):
        out[:, index] = _ALPHABET_ARRAY[rest % base]
        rest //= base
    return out


def _digits(number: int, length: int) -> bytes:
    out = bytearray(length)
    for index in range(length - 1, -1, -1):
        number, digit = divmod(number, _BASE)
        out[index] = ALPHABET[digit]
    return bytes(out)


def clamp_length(length: int | None) -> int:
    """memcached keys have 1 to 250 bytes; a recorded length outside that cannot be replayed as is."""
    if length is None or length < 1:
        return 1
    return min(length, MAX_KEY_LENGTH)


class KeySynthesizer:
    """Turns (key_hash, key_length) into a key. Call `reserve` with every short pair before the first `key`."""

    def __init__(self, short_pairs: Iterable[tuple[int, int]] = ()) -> None:
        self._short: dict[tuple[int, int], bytes] = {}
        self.merged = 0
        self._assign_short(sorted(set(short_pairs)))

    def _assign_short(self, pairs: list[tuple[int, int]]) -> None:
        used: dict[int, set[int]] = {}
        for key_hash, length in pairs:
            space = _BASE**length
            taken = used.setdefault(length, set())
            slot = _mix(key_hash) % space
            if len(taken) >= space:
                self.merged += 1
            else:
                while slot in taken:
                    slot = (slot + 1) % space
                taken.add(slot)
            self._short[key_hash, length] = _digits(slot, length)

    @staticmethod
    def is_short(length: int) -> bool:
        return length < INJECTIVE_LENGTH

    def key(self, key_hash: int, length: int) -> bytes:
        known = self._short.get((key_hash, length))
        if known is not None:
            return known
        if length < INJECTIVE_LENGTH:
            return _digits(_mix(key_hash) % _BASE**length, length)
        return self.keys(np.array([key_hash], dtype=np.uint64), np.array([length]))[0]

    def keys(self, hashes: np.ndarray, lengths: np.ndarray) -> list[bytes]:
        """`key` of every (hash, clamped length) pair of two arrays."""
        long_rows = lengths >= INJECTIVE_LENGTH
        if long_rows.all():
            return _long_keys(hashes, lengths)
        out: list[bytes] = [b""] * len(hashes)
        short_key = self.key
        for row in np.flatnonzero(~long_rows).tolist():
            out[row] = short_key(int(hashes[row]), int(lengths[row]))
        rows = np.flatnonzero(long_rows)
        if len(rows):
            for row, key in zip(rows.tolist(), _long_keys(hashes[rows], lengths[rows]), strict=True):
                out[row] = key
        return out


def long_keys(hashes: np.ndarray, lengths: np.ndarray) -> list[bytes]:
    """The keys of (hash, length) pairs of at least INJECTIVE_LENGTH characters: the hash's digits, then its mix's
    digits repeated to the length; computed a length at a time."""
    out: list[bytes] = [b""] * len(hashes)
    for length in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == length)
        selected = hashes[rows]
        head = _digit_matrix(selected, INJECTIVE_LENGTH)
        filler = _digit_matrix(_mix_array(selected), INJECTIVE_LENGTH)
        repeats = (length - INJECTIVE_LENGTH) // INJECTIVE_LENGTH + 1
        tail = np.tile(filler, (1, repeats))[:, : length - INJECTIVE_LENGTH]
        blob = np.concatenate([head, tail], axis=1).tobytes()
        for position, row in enumerate(rows.tolist()):
            out[row] = blob[position * length : (position + 1) * length]
    return out


def _long_keys(hashes: np.ndarray, lengths: np.ndarray) -> list[bytes]:
    """long_keys by its compiled twin (replay/_keys.pyx) where it is built, else by the specification."""
    twin = extensions.compiled("membench.replay._keys")
    if twin is None:
        return long_keys(hashes, lengths)
    keys: list[bytes] = twin.long_keys(np.ascontiguousarray(hashes, dtype=np.uint64),
                                       np.ascontiguousarray(lengths, dtype=np.int64))
    return keys


class ValueSource:
    """Values of any recorded size, all ASCII '0's so that incr/decr on a replayed key works as it did live."""

    def __init__(self) -> None:
        self._zeros = b"0" * 1024

    def value(self, length: int) -> bytes:
        if length > len(self._zeros):
            # Doubling spares a copy per larger size; past 64 MiB, the buffer is only as long as asked.
            self._zeros = b"0" * max(length, min(2 * len(self._zeros), _DOUBLED_VALUES))
        return self._zeros[:length]
