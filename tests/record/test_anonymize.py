"""Key hashes are keyed BLAKE2b-64 of the key under the salt, whether they come from the memo or are computed."""

from __future__ import annotations

import hashlib

import pytest

from membench.record import anonymize
from membench.record.anonymize import KeyHasher

SALT = bytes(range(16))


def reference(key: bytes, salt: bytes = SALT) -> int:
    return int.from_bytes(hashlib.blake2b(key, key=salt, digest_size=8).digest(), "little")


def test_hashes_match_keyed_blake2b_before_and_after_the_memo_empties(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anonymize, "CACHE_ENTRIES", 8)
    hasher = KeyHasher(SALT)
    keys = [b"user:%d" % i for i in range(20)] + [b"", b"k" * 250]
    for round_ in range(3):  # the 8-entry memo fills and is emptied several times in each round
        for key in keys + keys[::-1]:
            assert hasher(key) == reference(key), (round_, key)
            assert len(hasher._cache) <= 8  # the memory bound


def test_the_salt_changes_every_hash_and_a_memo_is_not_shared_between_salts() -> None:
    first = KeyHasher(SALT)
    other_salt = bytes(16)
    second = KeyHasher(other_salt)
    for key in (b"a", b"b", b"a"):
        assert first(key) == reference(key)
        assert second(key) == reference(key, other_salt)
        assert first(key) != second(key)
