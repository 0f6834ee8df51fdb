"""The client side of a replay connection: memcached's replies as `Response` events (sans-IO).

A replay reads only what memcached itself sends to a well-behaved client, so this reader is small: ASCII lines
(text and meta share them) with their data blocks, or binary response packets. It keeps whatever is incomplete
for the next `receive`.
"""

from __future__ import annotations

import struct

from membench.errors import MembenchError
from membench.protocol.events import Protocol, Reply, Response

_ASCII_REPLIES: dict[bytes, Reply] = {
    b"VALUE": Reply.VALUE,
    b"END": Reply.END,
    b"STORED": Reply.STORED,
    b"NOT_STORED": Reply.NOT_STORED,
    b"EXISTS": Reply.EXISTS,
    b"NOT_FOUND": Reply.NOT_FOUND,
    b"DELETED": Reply.DELETED,
    b"TOUCHED": Reply.TOUCHED,
    b"OK": Reply.OK,
    b"VERSION": Reply.VERSION,
    b"STAT": Reply.STAT,
    b"ERROR": Reply.ERROR,
    b"CLIENT_ERROR": Reply.CLIENT_ERROR,
    b"SERVER_ERROR": Reply.SERVER_ERROR,
    b"VA": Reply.VALUE,
    b"EN": Reply.MISS,
    b"HD": Reply.HD,
    b"NS": Reply.NOT_STORED,
    b"EX": Reply.EXISTS,
    b"NF": Reply.NOT_FOUND,
    b"MN": Reply.NOOP,
    b"ME": Reply.DEBUG,
}
_META_REPLIES = frozenset({b"VA", b"EN", b"HD", b"NS", b"EX", b"NF", b"MN", b"ME"})

_BINARY_HEADER = struct.Struct(">BBHBBHIIQ")
_BINARY_HEADER_SIZE = 24
_BINARY_RESPONSE_MAGIC = 0x81
_GET_OPCODES = frozenset({0x00, 0x09, 0x0C, 0x0D, 0x1D, 0x1E, 0x23, 0x24})
_STORE_OPCODES = frozenset({0x01, 0x02, 0x03, 0x0E, 0x0F, 0x11, 0x12, 0x13, 0x19, 0x1A})
_SUCCESS_BY_OPCODE: dict[int, Reply] = {
    **dict.fromkeys(_GET_OPCODES, Reply.VALUE),
    **dict.fromkeys(_STORE_OPCODES, Reply.STORED),
    0x04: Reply.DELETED,
    0x14: Reply.DELETED,
    0x05: Reply.NUMBER,
    0x06: Reply.NUMBER,
    0x15: Reply.NUMBER,
    0x16: Reply.NUMBER,
    0x0A: Reply.NOOP,
    0x0B: Reply.VERSION,
    0x1C: Reply.TOUCHED,
}
_FAILURE_BY_STATUS: dict[int, Reply] = {
    0x01: Reply.NOT_FOUND,
    0x02: Reply.EXISTS,
    0x03: Reply.SERVER_ERROR,  # value too large
    0x04: Reply.CLIENT_ERROR,  # invalid arguments
    0x05: Reply.NOT_STORED,
    0x06: Reply.CLIENT_ERROR,  # incr/decr on a non-numeric value
    0x81: Reply.ERROR,  # unknown command
    0x82: Reply.SERVER_ERROR,  # out of memory
}
_STAT_OPCODE = 0x10


class ReplyReader:
    """Feed it the bytes a memcached server sent; it returns the complete replies among them."""

    def __init__(self, protocol: Protocol) -> None:
        self._binary = protocol is Protocol.BINARY
        self._buffer = b""

    def receive(self, data: bytes) -> list[Response]:
        buffer = self._buffer + data if self._buffer else data
        if self._binary:
            replies, used = self._binary_replies(buffer)
        else:
            replies, used = self._ascii_replies(buffer)
        self._buffer = buffer[used:]
        return replies

    @staticmethod
    def _ascii_replies(buffer: bytes) -> tuple[list[Response], int]:
        replies: list[Response] = []
        position = 0
        size = len(buffer)
        while position < size:
            end = buffer.find(b"\r\n", position)
            if end < 0:
                break
            line = buffer[position:end]
            token, _, rest = line.partition(b" ")
            reply = _ASCII_REPLIES.get(token)
            value_length = None
            opaque: bytes | None = None
            next_position = end + 2
            if reply is Reply.VALUE:
                fields = rest.split(b" ")
                try:
                    value_length = int(fields[0] if token == b"VA" else fields[2])
                except (IndexError, ValueError) as error:
                    raise MembenchError("the server sent a malformed VALUE/VA reply line") from error
                next_position += value_length + 2
                if next_position > size:
                    break
            elif reply is None:
                reply = Reply.NUMBER if token.isdigit() else Reply.OTHER
            if token in _META_REPLIES and b" O" in line:
                for flag in rest.split(b" "):
                    if flag.startswith(b"O"):
                        opaque = flag[1:]
            replies.append(
                Response(Protocol.TEXT, reply, None, value_length, None, opaque, None, None, 0, 0)
            )
            position = next_position
        return replies, position

    @staticmethod
    def _binary_replies(buffer: bytes) -> tuple[list[Response], int]:
        replies: list[Response] = []
        position = 0
        size = len(buffer)
        while size - position >= _BINARY_HEADER_SIZE:
            magic, opcode, key_length, extras_length, _, status, body_length, opaque, _ = (
                _BINARY_HEADER.unpack_from(buffer, position)
            )
            if magic != _BINARY_RESPONSE_MAGIC:
                raise MembenchError(f"the server sent a binary reply with bad magic 0x{magic:02x}")
            if size - position < _BINARY_HEADER_SIZE + body_length:
                break
            value_length = None
            if status == 0:
                if opcode == _STAT_OPCODE:
                    reply = Reply.STAT if key_length else Reply.END
                else:
                    reply = _SUCCESS_BY_OPCODE.get(opcode, Reply.OK)
                if reply is Reply.VALUE:
                    value_length = body_length - extras_length - key_length
            elif status == 0x01 and opcode in _GET_OPCODES:
                reply = Reply.MISS
            else:
                reply = _FAILURE_BY_STATUS.get(status, Reply.SERVER_ERROR)
            replies.append(
                Response(Protocol.BINARY, reply, None, value_length, None, opaque, opcode, status, 0, 0)
            )
            position += _BINARY_HEADER_SIZE + body_length
        return replies, position
