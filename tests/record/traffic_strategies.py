"""Hypothesis strategies for memcached traffic at its limits: units of the three protocols with numbers at every
column's limits, arbitrary bytes between them, and chunkings with holes."""

from __future__ import annotations

import struct

from hypothesis import strategies as st

HEADER = struct.Struct(">BBHBBHIIQ")

limits = st.sampled_from([0, 1, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 3, 2**63 - 1, 2**63, 2**64,
                          -1, -(2**63) - 1, 99999999999999999999])
keys = st.sampled_from([b"k", b"a2V5", b"a2U=", b"!!!!", b"x" * 250, b"x" * 251])
words = st.sampled_from([b"get", b"gets", b"gat", b"set", b"cas", b"append", b"delete", b"incr", b"touch", b"mg",
                         b"ms", b"md", b"ma", b"mn", b"flush_all", b"VALUE", b"VA", b"HD", b"EN", b"NF", b"END",
                         b"STORED", b"CLIENT_ERROR", b"MN", b"12"])
flag_tokens = st.sampled_from([b"q", b"b", b"v", b"k", b"C", b"MR", b"N", b"T", b"F", b"O", b"f", b"t", b"s", b"Ma",
                               b"M+", b"MI", b"ME", b"M-", b"D", b"J", b"c"])


@st.composite
def text_unit(draw: st.DrawFn) -> bytes:
    tokens = [draw(words)]
    for _ in range(draw(st.integers(0, 5))):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            tokens.append(b"%d" % draw(limits))
        elif choice == 1:
            tokens.append(draw(keys))
        else:
            tokens.append(draw(flag_tokens) + b"%d" % draw(limits))
    line = b" ".join(tokens) + b"\r\n"
    return line + draw(st.binary(max_size=20)) + draw(st.sampled_from([b"", b"\r\n"]))


@st.composite
def binary_unit(draw: st.DrawFn) -> bytes:
    magic = draw(st.sampled_from([0x80, 0x81]))
    opcode = draw(st.sampled_from([0x00, 0x01, 0x04, 0x05, 0x09, 0x0A, 0x0C, 0x0D, 0x11, 0x1C, 0x1D, 0x10]))
    key = draw(st.sampled_from([b"", b"k", b"x" * 250]))
    extras = draw(st.sampled_from([b"", struct.pack(">II", draw(limits) % 2**32, draw(limits) % 2**32),
                                   struct.pack(">QQI", 2**64 - 1, 2**64 - 1, 2**32 - 1), b"\xff\xff\xff\xff"]))
    value = draw(st.binary(max_size=20))
    status = draw(st.sampled_from([0, 1, 0x81]))
    body = len(extras) + len(key) + len(value)
    return (HEADER.pack(magic, opcode, len(key), len(extras), 0, status, body, draw(limits) % 2**32,
                        draw(limits) % 2**64) + extras + key + value)


streams = st.lists(st.one_of(text_unit(), binary_unit(), st.binary(max_size=40)), max_size=12).map(b"".join)
# Each piece: bytes given to the parser (True) or a hole of that many bytes (False).
cuts = st.lists(st.tuples(st.booleans(), st.integers(1, 60)), max_size=12)
timestamps = st.sampled_from([0, 1, 10**9, 2**32 * 1000 + 5, 2**62])


# Well-formed exchanges: a request and a reply it may get, so that pairing sees real conversations (multi-gets
# with some hits, quiet meta pipelines closed by mn, binary quiet gets closed by a noop, noreply, opaques).
pool = st.sampled_from([b"a", b"b", b"key:1"])
values = st.binary(max_size=12)


@st.composite
def text_exchange(draw: st.DrawFn) -> tuple[bytes, bytes]:
    kind = draw(st.integers(0, 7))
    key = draw(pool)
    value = draw(values)
    if kind == 0:
        noreply = draw(st.booleans())
        command = draw(st.sampled_from([b"set", b"add", b"append", b"cas"]))
        cas = b" 7" if command == b"cas" else b""
        request = b"%s %s %d %d %d%s%s\r\n%s\r\n" % (command, key, draw(limits) % 2**33, draw(limits) % 2**64,
                                                     len(value), cas, b" noreply" if noreply else b"", value)
        return request, b"" if noreply else draw(st.sampled_from([b"STORED\r\n", b"NOT_STORED\r\n", b"EXISTS\r\n"]))
    if kind in (1, 2):
        keys = draw(st.lists(pool, min_size=1, max_size=4))
        hits = [k for k in keys if draw(st.booleans())]
        word = draw(st.sampled_from([b"get", b"gets", b"gat 10"]))
        reply = b"".join(b"VALUE %s %d %d 9\r\n%s\r\n" % (k, draw(limits) % 2**33, len(value), value) for k in hits)
        return b"%s %s\r\n" % (word, b" ".join(keys)), reply + b"END\r\n"
    if kind == 3:
        return b"delete %s\r\n" % key, draw(st.sampled_from([b"DELETED\r\n", b"NOT_FOUND\r\n"]))
    if kind == 4:
        return b"incr %s %d\r\n" % (key, draw(limits) % 2**65), draw(st.sampled_from([b"6\r\n", b"NOT_FOUND\r\n"]))
    if kind == 5:
        return b"touch %s %d\r\n" % (key, draw(limits)), draw(st.sampled_from([b"TOUCHED\r\n", b"NOT_FOUND\r\n"]))
    if kind == 6:
        return b"stats\r\n", b"STAT pid 1\r\nSTAT uptime 2\r\nEND\r\n"
    return b"version\r\n", draw(st.sampled_from([b"VERSION 1.6.18\r\n", b"ERROR\r\n", b"SERVER_ERROR busy\r\n"]))


@st.composite
def meta_exchange(draw: st.DrawFn) -> tuple[bytes, bytes]:
    kind = draw(st.integers(0, 4))
    key = draw(pool)
    value = draw(values)
    quiet = draw(st.booleans())
    flags = draw(st.lists(st.sampled_from([b"v", b"k", b"c", b"f", b"T30", b"Oab", b"N0", b"MA", b"MD", b"C5",
                                           b"D3", b"J9"]), max_size=3, unique=True))
    flags += [b"q"] if quiet else []
    opaque = b" Oab" if b"Oab" in flags else b""
    returned = opaque + (b" k%s" % key if b"k" in flags else b"")
    if kind == 0:
        hit = draw(st.booleans())
        if not hit:
            reply = b"" if quiet else b"EN\r\n"
        elif b"v" in flags:
            reply = b"VA %d%s\r\n%s\r\n" % (len(value), returned, value)
        else:
            reply = b"HD%s\r\n" % returned
        return b"mg %s %s\r\n" % (key, b" ".join(flags)), reply
    if kind == 1:
        reply = draw(st.sampled_from([b"HD", b"NS", b"EX", b"NF"])) + returned + b"\r\n"
        if quiet and reply.startswith(b"HD"):
            reply = b""
        return b"ms %s %d %s\r\n%s\r\n" % (key, len(value), b" ".join(flags), value), reply
    if kind == 2:
        reply = draw(st.sampled_from([b"HD", b"NF"])) + returned + b"\r\n"
        return b"md %s %s\r\n" % (key, b" ".join(flags)), b"" if quiet and reply.startswith(b"HD") else reply
    if kind == 3:
        reply = draw(st.sampled_from([b"HD\r\n", b"NF\r\n", b"VA 1\r\n7\r\n"]))
        return b"ma %s %s\r\n" % (key, b" ".join(flags)), b"" if quiet and not reply.startswith(b"NF") else reply
    return b"mn\r\n", b"MN\r\n"


@st.composite
def binary_exchange(draw: st.DrawFn) -> tuple[bytes, bytes]:
    opcode = draw(st.sampled_from([0x00, 0x09, 0x0C, 0x0D, 0x01, 0x11, 0x04, 0x05, 0x0A, 0x1C, 0x1D, 0x10]))
    key = b"" if opcode in (0x0A, 0x10) else draw(pool)
    value = draw(values) if opcode in (0x01, 0x11) else b""
    extras = {0x01: b"\0" * 8, 0x11: b"\0" * 8, 0x05: b"\0" * 20, 0x1C: b"\0" * 4, 0x1D: b"\0" * 4}.get(opcode, b"")
    opaque = draw(st.integers(0, 3))
    request = HEADER.pack(0x80, opcode, len(key), len(extras), 0, 0, len(extras) + len(key) + len(value), opaque,
                          draw(st.sampled_from([0, 5]))) + extras + key + value
    status = draw(st.sampled_from([0, 0, 1, 2]))
    quiet = opcode in (0x09, 0x0D, 0x11)
    if quiet and (status == 1 or (opcode == 0x11 and status == 0)):
        return request, b""
    reply_extras = b"\0\0\0\1" if status == 0 and opcode in (0x00, 0x09, 0x0C, 0x0D, 0x1D) else b""
    reply_key = key if opcode in (0x0C, 0x0D) and status == 0 else b""
    reply_value = draw(values) if reply_extras else b""
    reply = HEADER.pack(0x81, opcode, len(reply_key), len(reply_extras), 0, status,
                        len(reply_extras) + len(reply_key) + len(reply_value), opaque, 9)
    reply += reply_extras + reply_key + reply_value
    if opcode == 0x10:
        reply = HEADER.pack(0x81, 0x10, 3, 0, 0, 0, 4, opaque, 0) + b"pid1" + reply
    return request, reply


def _conversation(exchanges: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    return b"".join(request for request, _ in exchanges), b"".join(reply for _, reply in exchanges)


conversations = st.one_of(
    st.lists(st.one_of(text_exchange(), meta_exchange()), max_size=10).map(_conversation),
    st.lists(binary_exchange(), max_size=10).map(_conversation),
)
