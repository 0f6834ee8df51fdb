"""Parser throughput: commands/s for a typical get/set mix (90% get, 10% set of 100-byte values), text and binary.

Each figure is printed beside a naive baseline measured in the same run on the same bytes:
- text: a plain `bytes.split(b"\\r\\n")` loop that splits each line into tokens and skips a set's data line
  (it builds no events, knows no data block lengths, and breaks on any value holding \\r\\n);
- binary: a loop that slices each packet out and unpacks its header with `struct.unpack` (no events either).
The stream is fed in 64 KiB chunks, as the eBPF ring buffer and pcap reassembly deliver it.

    python bench/parser_rate.py [--commands N]
"""

from __future__ import annotations

import argparse
import struct
import time

from membench.protocol.stream import RequestStreamParser, ResponseStreamParser

CHUNK = 64 * 1024
VALUE = b"v" * 100
HEADER = struct.Struct(">BBHBBHIIQ")


def text_requests(n: int) -> bytes:
    parts = []
    for i in range(n):
        key = b"user:%08d" % (i * 7919 % 1_000_000)
        if i % 10 == 0:
            parts.append(b"set " + key + b" 0 3600 100\r\n" + VALUE + b"\r\n")
        else:
            parts.append(b"get " + key + b"\r\n")
    return b"".join(parts)


def text_responses(n: int) -> bytes:
    parts = []
    for i in range(n):
        if i % 10 == 0:
            parts.append(b"STORED\r\n")
        elif i % 2:
            parts.append(b"VALUE user:%08d 0 100\r\n" % i + VALUE + b"\r\nEND\r\n")
        else:
            parts.append(b"END\r\n")
    return b"".join(parts)


def binary_requests(n: int) -> bytes:
    parts = []
    for i in range(n):
        key = b"user:%08d" % (i * 7919 % 1_000_000)
        if i % 10 == 0:
            extras = struct.pack(">II", 0, 3600)
            body = extras + key + VALUE
            parts.append(HEADER.pack(0x80, 0x01, len(key), 8, 0, 0, len(body), i, 0) + body)
        else:
            parts.append(HEADER.pack(0x80, 0x00, len(key), 0, 0, 0, len(key), i, 0) + key)
    return b"".join(parts)


def chunks(data: bytes) -> list[bytes]:
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def membench_rate(pieces: list[bytes], response: bool, units: int) -> float:
    parser = ResponseStreamParser() if response else RequestStreamParser()
    start = time.perf_counter()
    count = 0
    for index, piece in enumerate(pieces):
        count += len(parser.receive(piece, index))
    count += len(parser.close(len(pieces)))
    elapsed = time.perf_counter() - start
    assert count == units, f"parsed {count} units, expected {units}"
    return units / elapsed


def naive_text_rate(data: bytes, units: int) -> float:
    start = time.perf_counter()
    count = 0
    skip_next = False
    for line in data.split(b"\r\n"):
        if skip_next:
            skip_next = False
            continue
        tokens = line.split()
        if not tokens:
            continue
        if tokens[0] == b"set" or tokens[0] == b"VALUE":
            skip_next = True
        count += 1
    elapsed = time.perf_counter() - start
    assert count == units, f"naive parse found {count} units, expected {units}"
    return units / elapsed


def naive_binary_rate(data: bytes, units: int) -> float:
    start = time.perf_counter()
    count = 0
    pos = 0
    while pos < len(data):
        header = struct.unpack(">BBHBBHIIQ", data[pos:pos + 24])
        packet = data[pos:pos + 24 + header[6]]
        pos += len(packet)
        count += 1
    elapsed = time.perf_counter() - start
    assert count == units
    return units / elapsed


def best_of(runs, measure, *args):
    return max(measure(*args) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n = args.commands
    # text responses: a set gives 1 unit, a hit VALUE+END 2 units, a miss END 1 unit
    response_units = sum(1 if i % 10 == 0 else (2 if i % 2 else 1) for i in range(n))
    cases = [
        ("text requests", text_requests(n), False, n, naive_text_rate),
        ("text responses", text_responses(n), True, response_units, naive_text_rate),
        ("binary requests", binary_requests(n), False, n, naive_binary_rate),
    ]
    print(f"{'stream':<16} {'membench units/s':>17} {'naive units/s':>14} {'ratio':>6}")
    for name, data, response, units, naive in cases:
        ours = best_of(args.runs, membench_rate, chunks(data), response, units)
        theirs = best_of(args.runs, naive, data, units)
        print(f"{name:<16} {ours:>17,.0f} {theirs:>14,.0f} {ours / theirs:>6.2f}")


if __name__ == "__main__":
    main()
