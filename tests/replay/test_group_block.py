"""The compiled planner's GroupBlock (record/_core_groups.pxi) reads back as the Groups it holds, and refuses
buffers whose offsets would send it reading past them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membench import extensions
from membench.replay.requests import BLOCK_FIELDS, CAS_CURRENT, CAS_NONE, CAS_STALE, Group

CORE = extensions.compiled("membench.record._core")
pytestmark = pytest.mark.skipif(CORE is None, reason="the compiled core is not built or is off")

INT64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def groups(draw: st.DrawFn) -> Group:
    cas = draw(st.sampled_from([CAS_NONE, CAS_CURRENT, CAS_STALE]))
    return Group(payload=draw(st.binary(max_size=40)), slot=draw(INT64), rows=draw(INT64), expect=draw(INT64),
                 units=draw(INT64), at_ns=draw(INT64), outstanding=draw(INT64), seq=draw(INT64), number=draw(INT64),
                 after=tuple(draw(st.lists(st.tuples(INT64, INT64), max_size=3))), cas=cas,
                 key=draw(st.binary(min_size=1, max_size=10)) if cas else b"")


@settings(max_examples=200, deadline=None)
@given(planned=st.lists(groups(), max_size=12), data=st.data())
def test_a_block_reads_back_as_its_groups(planned: list[Group], data: st.DataObject) -> None:
    block = CORE.GroupBlock.of(planned)
    assert len(block) == len(planned)
    assert list(block) == planned
    start = data.draw(st.integers(-15, 15))
    stop = data.draw(st.integers(-15, 15))
    assert block[start:stop] == planned[start:stop]
    if planned:
        assert block[-1] == planned[-1]
    with pytest.raises(IndexError):
        block[len(planned)]
    with pytest.raises(IndexError):
        block[-len(planned) - 1]


def table(*rows: tuple[int, int]) -> bytes:
    """Rows whose fields are zero but their (payload_end, after_end)."""
    fields = np.zeros((len(rows), len(BLOCK_FIELDS)), np.int64)
    for index, (payload_end, after_end) in enumerate(rows):
        fields[index, BLOCK_FIELDS.index("payload_end")] = payload_end
        fields[index, BLOCK_FIELDS.index("after_end")] = after_end
    return fields.tobytes()


PAIR = np.array([1, 2], np.int64).tobytes()


@pytest.mark.parametrize(("payloads", "rows", "after"), [
    (b"abc", table((2, 0), (1, 0)), b""),  # a payload ends before the previous one
    (b"abc", table((4, 0)), b""),  # past the payloads
    (b"abc", table((3, 1), (3, 0)), PAIR),  # dependencies run backwards
    (b"abc", table((3, 2)), PAIR),  # past the dependencies
    (b"abc", table((3, 0))[:-8], b""),  # a row cut short
    (b"abc", table((3, 1)), PAIR[:-1]),  # half a pair
])
def test_a_block_with_offsets_out_of_its_buffers_is_refused(payloads: bytes, rows: bytes, after: bytes) -> None:
    with pytest.raises(ValueError, match="group block"):
        CORE.GroupBlock(payloads, rows, after, None)
