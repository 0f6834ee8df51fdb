"""`top --show-keys` asks the record pipeline which keys are behind the hottest hashes: the Python specification
and the compiled twin answer alike, from memory, for keys they hashed."""

from __future__ import annotations

from typing import Any

import pytest

from membench.extensions import compiled
from membench.record.anonymize import KeyHasher
from membench.record.pipeline import RecordPipeline

SALT = b"0123456789abcdef"
CORE = compiled("membench.record._core")


def pipelines() -> list[Any]:
    found: list[Any] = [RecordPipeline(KeyHasher(SALT))]
    if CORE is not None:
        found.append(CORE.RecordPipeline(SALT, True))  # as `top --show-keys` makes it: remembering keys
    return found


@pytest.mark.parametrize("pipeline", pipelines(), ids=lambda p: type(p).__module__)
def test_keys_for_finds_the_keys_behind_hashes(pipeline: Any) -> None:
    pipeline.open(1, False)
    pipeline.chunk(1, 0, 0, b"get hotkey\r\nget other\r\n", 23, 1000)
    pipeline.chunk(1, 1, 0, b"END\r\nEND\r\n", 10, 2000)
    hashes = {row[4] for row in pipeline.take_rows()}
    hasher = KeyHasher(SALT)
    assert hashes == {hasher(b"hotkey"), hasher(b"other")}
    assert pipeline.keys_for({hasher(b"hotkey"), 12345}) == {hasher(b"hotkey"): b"hotkey"}
