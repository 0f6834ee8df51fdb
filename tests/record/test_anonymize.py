"""Key hashes are SipHash-2-4 of the key under the salt: the specification gives the paper's values, the compiled
hash and pipeline give the specification's, and the memo changes none of them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from membench.extensions import compiled
from membench.record import anonymize
from membench.record.anonymize import KeyHasher, siphash24

SALT = bytes(range(16))
CORE = compiled("membench.record._core")
needs_core = pytest.mark.skipif(CORE is None, reason="the compiled twins are off or not built")


def test_siphash_gives_the_values_of_its_paper() -> None:
    # Aumasson and Bernstein, "SipHash: a fast short-input PRF" (2012): appendix A's example, and the first value
    # of the reference implementation's test vectors (the empty message), both under the key 00 01 .. 0f.
    assert siphash24(SALT, bytes(range(15))) == 0xA129CA6149BE45E5
    assert siphash24(SALT, b"") == 0x726FDB47DD0E0E31


@needs_core
@given(st.binary(min_size=16, max_size=16), st.binary(max_size=300))
def test_the_compiled_siphash_is_the_specifications(salt: bytes, key: bytes) -> None:
    assert CORE.siphash24(salt, key) == siphash24(salt, key)


@needs_core
def test_the_compiled_pipeline_hashes_as_the_specification_with_and_without_remembering_keys() -> None:
    keys = [b"k", b"user:1", b"x" * 119, b"y" * 120, b"z" * 250]
    requests = b"".join(b"get " + key + b"\r\n" for key in keys)
    for remember in (False, True):
        pipeline = CORE.RecordPipeline(SALT, remember)
        pipeline.open(0, False)
        pipeline.chunk(0, 0, 0, requests, len(requests), 1)
        pipeline.close_all(2)
        hashes = [row[4] for row in pipeline.take_rows()]
        assert hashes == [siphash24(SALT, key) for key in keys]
        remembered = pipeline.keys_for(hashes)
        # Keys up to a memo slot's 119 bytes are remembered, and only when asked.
        assert remembered == ({siphash24(SALT, key): key for key in keys[:3]} if remember else {})


def test_hashes_are_siphash_before_and_after_the_memo_empties(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anonymize, "CACHE_ENTRIES", 8)
    hasher = KeyHasher(SALT)
    keys = [b"user:%d" % i for i in range(20)] + [b"", b"k" * 250]
    for round_ in range(3):  # the 8-entry memo fills and is emptied several times in each round
        for key in keys + keys[::-1]:
            assert hasher(key) == siphash24(SALT, key), (round_, key)
            assert len(hasher._cache) <= 8  # the memory bound


def test_the_salt_changes_every_hash_and_a_memo_is_not_shared_between_salts() -> None:
    first = KeyHasher(SALT)
    other_salt = bytes(16)
    second = KeyHasher(other_salt)
    for key in (b"a", b"b", b"a"):
        assert first(key) == siphash24(SALT, key)
        assert second(key) == siphash24(other_salt, key)
        assert first(key) != second(key)


def test_the_fingerprint_tells_salts_apart_and_is_not_a_key_hash() -> None:
    assert KeyHasher(SALT).fingerprint == KeyHasher(SALT).fingerprint
    assert KeyHasher(SALT).fingerprint != KeyHasher(bytes(16)).fingerprint
    assert int(KeyHasher(SALT).fingerprint, 16) not in {siphash24(SALT, b""), siphash24(SALT, b"membench")}
