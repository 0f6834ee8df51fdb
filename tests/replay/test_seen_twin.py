"""The compiled set of keys met (replay/_seen.pyx) against its specification (replay/seen.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membench import extensions
from membench.replay.seen import MAX_LENGTH, SeenKeys

TWIN = extensions.compiled("membench.replay._seen")
needs_twin = pytest.mark.skipif(TWIN is None, reason="the compiled twins are not built or are switched off")

# Few distinct hashes and lengths, so that batches repeat pairs, and hashes at the edges of 64 bits.
_HASHES = st.sampled_from([0, 1, 2, 3, 1 << 32, 2**63, 2**64 - 1, 0x9E3779B97F4A7C15])
_PAIRS = st.lists(st.tuples(_HASHES, st.sampled_from([0, 1, 9, 250, MAX_LENGTH])), max_size=40)


def _arrays(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([h for h, _ in pairs], dtype=np.uint64), np.array([n for _, n in pairs], dtype=np.int64)


@needs_twin
@settings(max_examples=300, deadline=None)
@given(batches=st.lists(_PAIRS, max_size=6))
def test_twin_meets_the_same_keys_first(batches: list[list[tuple[int, int]]]) -> None:
    specification, twin = SeenKeys(), TWIN.SeenKeys()
    met_before: set[tuple[int, int]] = set()
    for pairs in batches:
        expected = []
        for pair in pairs:
            expected.append(pair not in met_before)
            met_before.add(pair)
        assert specification.first_met(*_arrays(pairs)).tolist() == expected
        assert twin.first_met(*_arrays(pairs)).tolist() == expected


@needs_twin
def test_twin_keeps_every_key_as_its_table_grows() -> None:
    """A million distinct keys (the table doubles ten times), the same again, then each hash with another length:
    a key is its hash and its length."""
    rng = np.random.default_rng(7)
    hashes = np.unique(rng.integers(0, 2**64, 1_000_000, dtype=np.uint64))
    lengths = rng.integers(1, 251, len(hashes))
    twin = TWIN.SeenKeys()
    assert twin.first_met(hashes, lengths).all()
    assert not twin.first_met(hashes, lengths).any()
    other_lengths = lengths % 250 + 1
    assert twin.first_met(np.concatenate([hashes, hashes]), np.concatenate([other_lengths, lengths])).tolist() == (
        [True] * len(hashes) + [False] * len(hashes))


@pytest.mark.parametrize("implementation", ["specification", "twin"])
@pytest.mark.parametrize("length", [-1, MAX_LENGTH + 1])
def test_lengths_beyond_the_column_are_refused(implementation: str, length: int) -> None:
    if implementation == "twin" and TWIN is None:
        pytest.skip("the compiled twins are not built or are switched off")
    keys = SeenKeys() if implementation == "specification" else TWIN.SeenKeys()
    with pytest.raises(ValueError, match="key lengths"):
        keys.first_met(*_arrays([(1, length)]))
