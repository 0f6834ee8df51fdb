"""The compiled long-key synthesis (replay/_keys.pyx) against its numpy specification (replay/keys.py's long_keys):
every hash of the 64-bit range, every length a long key can have, in any order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membench import extensions
from membench.replay.keys import INJECTIVE_LENGTH, MAX_KEY_LENGTH, long_keys

TWIN = extensions.compiled("membench.replay._keys")
pytestmark = pytest.mark.skipif(TWIN is None, reason="the compiled key synthesis is not built or is off: nothing to "
                                                      "compare")

HASHES = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 93, 94, 2**63, 2**64 - 1]))
LENGTHS = st.one_of(st.integers(INJECTIVE_LENGTH, MAX_KEY_LENGTH),
                    st.sampled_from([INJECTIVE_LENGTH, INJECTIVE_LENGTH + 1, 2 * INJECTIVE_LENGTH, MAX_KEY_LENGTH]))


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(HASHES, LENGTHS), max_size=40))
def test_twin_makes_the_same_keys(pairs: list[tuple[int, int]]) -> None:
    hashes = np.array([key_hash for key_hash, _ in pairs], dtype=np.uint64)
    lengths = np.array([length for _, length in pairs], dtype=np.int64)
    assert TWIN.long_keys(hashes, lengths) == long_keys(hashes, lengths)


def test_a_short_length_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 10"):
        TWIN.long_keys(np.array([5], dtype=np.uint64), np.array([INJECTIVE_LENGTH - 1], dtype=np.int64))
