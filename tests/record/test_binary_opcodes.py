"""Binary replies are paired by the opcode they repeat from their request, in the specification and the twin."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from membench.extensions import compiled
from membench.profile.schema import COLUMNS
from membench.record.anonymize import KeyHasher
from membench.record.pipeline import RecordPipeline

SALT = b"0123456789abcdef"
CORE = compiled("membench.record._core")
ADD, SET = 0x02, 0x01
HEADER = struct.Struct(">BBHBBHIIQ")


def request(opcode: int, key: bytes) -> bytes:
    extras = struct.pack(">II", 0, 0)
    body = len(extras) + len(key) + 1
    return HEADER.pack(0x80, opcode, len(key), len(extras), 0, 0, body, 0, 0) + extras + key + b"v"


def reply(opcode: int) -> bytes:
    return HEADER.pack(0x81, opcode, 0, 0, 0, 0, 0, 0, 7)


def pipelines() -> list[Any]:
    found = [pytest.param(lambda: RecordPipeline(KeyHasher(SALT)), id="specification")]
    if CORE is not None:
        found.append(pytest.param(lambda: CORE.RecordPipeline(SALT), id="compiled"))
    return found


@pytest.mark.parametrize("make", pipelines())
def test_a_reply_lost_in_a_hole_does_not_let_the_next_one_answer_another_command(make: Any) -> None:
    # An add then a set on one connection, both with opaque 0 (as many clients send); the add's reply is lost in a
    # capture hole. The set's STORED could answer an add too: only its opcode says whose it is. Before, the add took
    # it and the set was left unanswered.
    pipeline = make()
    pipeline.open(1, False)
    requests = request(ADD, b"a") + request(SET, b"b")
    pipeline.chunk(1, 0, 0, requests, len(requests), 1_000)
    lost = len(reply(ADD))
    pipeline.chunk(1, 1, lost, reply(SET), len(reply(SET)), 2_000)
    pipeline.close_all(3_000)
    rows = [dict(zip(COLUMNS, row, strict=True)) for row in pipeline.take_rows()]
    assert [(row["command"], row["status"]) for row in rows] == [("add", "unanswered"), ("set", "stored")]


@pytest.mark.parametrize("make", pipelines())
def test_a_text_error_still_answers_a_binary_request(make: Any) -> None:
    # memcached run with -B ascii reads a binary client's bytes as text and answers ERROR: a reply with no opcode
    # to compare, which answers the request as an error, as before.
    pipeline = make()
    pipeline.open(1, False)
    get = HEADER.pack(0x80, 0x00, 1, 0, 0, 0, 1, 0, 0) + b"a"
    pipeline.chunk(1, 0, 0, get, len(get), 1_000)
    pipeline.chunk(1, 1, 0, b"ERROR\r\n", 7, 2_000)
    pipeline.close_all(3_000)
    rows = [dict(zip(COLUMNS, row, strict=True)) for row in pipeline.take_rows()]
    assert [(row["command"], row["status"]) for row in rows] == [("get", "error")]
