"""One parser per direction of a connection: detects the protocol, then delegates to the text or binary parser.

memcached fixes a connection's protocol on its first byte (0x80 starts a binary request; anything else is text,
and text and meta commands may then be mixed freely), so detection looks at that byte. When the parser did not
see the start of the stream (`mid_stream=True`, or a hole before any data), the first byte proves nothing: it
waits until the data shows either a strictly plausible binary header or a strictly valid text line, picks the
protocol of whichever comes first (or binary, if its header is followed by another plausible one, since values
may hold text lines), and lets that parser skip what came before it.

Usage, h11 style (no I/O; timestamps are data):

    parser = RequestStreamParser()
    for event in parser.receive(chunk, timestamp_ns): ...
    parser.receive_hole(missing, timestamp_ns)      # bytes that existed but were not captured
    parser.close(timestamp_ns)                      # end of stream
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from membench.protocol.binary import (
    REQUEST_MAGIC,
    RESPONSE_MAGIC,
    BinaryRequestParser,
    BinaryResponseParser,
)
from membench.protocol.events import ParserEvent, Protocol, Skipped
from membench.protocol.framing import FramedParser, ParserStats
from membench.protocol.text import TextRequestParser, TextResponseParser

__all__ = ["ParserStats", "RequestStreamParser", "ResponseStreamParser"]

_Parser = TextRequestParser | TextResponseParser | BinaryRequestParser | BinaryResponseParser

# While the protocol of a stream joined mid-way is unknown, at most this much is held to decide it.
DETECTION_WINDOW = 64 * 1024


class Detection(Enum):
    """How far a stream parser is in knowing its protocol."""

    FIRST_BYTE = "first byte"  # the stream starts at a unit boundary: its first byte names the protocol
    SEARCHING = "searching"  # joined mid-way or past a hole: held bytes are searched for a strictly valid unit
    DECIDED = "decided"  # every byte now goes to the chosen parser


class _StreamParser:
    __slots__ = ("_binary_class", "_held", "_magic", "_parser", "_text_class", "detection", "receive", "stats")

    def __init__(self, text_class: type[TextRequestParser | TextResponseParser],
                 binary_class: type[BinaryRequestParser | BinaryResponseParser], magic: int,
                 mid_stream: bool) -> None:
        self.stats = ParserStats()
        self._text_class = text_class
        self._binary_class = binary_class
        self._magic = magic
        self._parser: FramedParser | None = None  # set when `detection` is DECIDED
        self.detection = Detection.SEARCHING if mid_stream else Detection.FIRST_BYTE
        self._held: list[tuple[bytes, int]] = []  # chunks seen while SEARCHING
        # `receive(data, timestamp_ns) -> events`. Once the protocol is known this is the chosen parser's own
        # bound method, so every later chunk goes straight to it instead of through a forwarding call.
        self.receive: Callable[[bytes, int], list[ParserEvent]] = self._receive_undecided

    @property
    def protocol(self) -> Protocol | None:
        """None until detected; TEXT, then META once a meta command (or reply) is seen; or BINARY."""
        return None if self._parser is None else self._parser.protocol

    def _receive_undecided(self, data: bytes, timestamp_ns: int) -> list[ParserEvent]:
        if not data:
            return []
        if self.detection is Detection.FIRST_BYTE:
            parser_class = self._binary_class if data[0] == self._magic else self._text_class
            return self._decide(parser_class(self.stats)).receive(data, timestamp_ns)
        return self._detect(bytes(data), timestamp_ns)

    def _decide(self, parser: _Parser) -> _Parser:
        self.detection = Detection.DECIDED
        self._parser = parser
        self.receive = parser.receive
        return parser

    def receive_hole(self, length: int, timestamp_ns: int) -> list[ParserEvent]:
        if self._parser is not None:
            return self._parser.receive_hole(length, timestamp_ns)
        if length <= 0:
            return []
        self.stats.bytes_missing += length
        held = self._drop_held()
        self.detection = Detection.SEARCHING
        return [Skipped(held + length, "hole", timestamp_ns)]

    def close(self, timestamp_ns: int) -> list[ParserEvent]:
        if self._parser is not None:
            return self._parser.close(timestamp_ns)
        held = self._drop_held()
        return [Skipped(held, "incomplete", timestamp_ns)] if held else []

    def _drop_held(self) -> int:
        held = sum(len(chunk) for chunk, _ in self._held)
        self.stats.bytes_skipped += held
        self._held.clear()
        return held

    def _detect(self, data: bytes, timestamp_ns: int) -> list[ParserEvent]:
        held = self._held
        held.append((data, timestamp_ns))
        window = b"".join(chunk for chunk, _ in held)
        text = self._text_class(self.stats, synced=False)
        binary = self._binary_class(self.stats, synced=False)
        text_at = text.sync_offset(window)
        binary_at = binary.sync_offset(window)
        events: list[ParserEvent] = []
        if text_at is None and binary_at is None:
            # Only the end can still hold the start of a unit; older chunks can never decide anything.
            while len(window) > DETECTION_WINDOW and len(held) > 1:
                dropped = len(held.pop(0)[0])
                window = window[dropped:]
                self.stats.bytes_skipped += dropped
                events.append(Skipped(dropped, "resync", timestamp_ns))
            return events
        # Values may hold text lines, so a chain of binary packets outweighs an earlier text line.
        use_binary = text_at is None or (binary_at is not None and (binary_at < text_at
                                                                     or binary.chained(window, binary_at)))
        parser = self._decide(binary if use_binary else text)
        # Replay the held chunks so that every event keeps the timestamps of the chunks its bytes came in.
        for chunk, chunk_ts in held:
            events += parser.receive(chunk, chunk_ts)
        held.clear()
        return events


class RequestStreamParser(_StreamParser):
    """Client -> server bytes of one connection."""

    __slots__ = ()

    def __init__(self, mid_stream: bool = False) -> None:
        super().__init__(TextRequestParser, BinaryRequestParser, REQUEST_MAGIC, mid_stream)


class ResponseStreamParser(_StreamParser):
    """Server -> client bytes of one connection."""

    __slots__ = ()

    def __init__(self, mid_stream: bool = False) -> None:
        super().__init__(TextResponseParser, BinaryResponseParser, RESPONSE_MAGIC, mid_stream)
