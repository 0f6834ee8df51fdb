# Keyed BLAKE2b with an 8-byte digest (RFC 7693), the hash of record/anonymize.py's KeyHasher: a key hashes to the
# same 64-bit value here as in hashlib, so profiles of both pipelines (and of earlier versions) agree under one salt.
# The state after the salt block is computed once; each key then costs one compression per 128 bytes of key.

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memset

cdef uint64_t[8] _IV = [
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
]

cdef uint8_t[12][16] _SIGMA = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
]


cdef inline uint64_t _rotr(uint64_t x, int n) noexcept nogil:
    return (x >> n) | (x << (64 - n))


cdef inline void _mix(uint64_t* v, int a, int b, int c, int d, uint64_t x, uint64_t y) noexcept nogil:
    v[a] = v[a] + v[b] + x
    v[d] = _rotr(v[d] ^ v[a], 32)
    v[c] = v[c] + v[d]
    v[b] = _rotr(v[b] ^ v[c], 24)
    v[a] = v[a] + v[b] + y
    v[d] = _rotr(v[d] ^ v[a], 16)
    v[c] = v[c] + v[d]
    v[b] = _rotr(v[b] ^ v[c], 63)


cdef void _compress(uint64_t* h, const uint8_t* block, uint64_t counter, bint last) noexcept nogil:
    cdef uint64_t[16] v
    cdef uint64_t[16] m
    cdef int i
    cdef const uint8_t* s
    memcpy(m, block, 128)  # little-endian words, as on every machine this builds for (x86-64, arm64)
    for i in range(8):
        v[i] = h[i]
        v[i + 8] = _IV[i]
    v[12] ^= counter
    if last:
        v[14] = ~v[14]
    for i in range(12):
        s = _SIGMA[i]
        _mix(v, 0, 4, 8, 12, m[s[0]], m[s[1]])
        _mix(v, 1, 5, 9, 13, m[s[2]], m[s[3]])
        _mix(v, 2, 6, 10, 14, m[s[4]], m[s[5]])
        _mix(v, 3, 7, 11, 15, m[s[6]], m[s[7]])
        _mix(v, 0, 5, 10, 15, m[s[8]], m[s[9]])
        _mix(v, 1, 6, 11, 12, m[s[10]], m[s[11]])
        _mix(v, 2, 7, 8, 13, m[s[12]], m[s[13]])
        _mix(v, 3, 4, 9, 14, m[s[14]], m[s[15]])
    for i in range(8):
        h[i] ^= v[i] ^ v[i + 8]


cdef struct KeyedHash:
    uint64_t[8] keyed  # the state after the salt block
    uint64_t[8] empty  # the whole hash of an empty message (the salt block is then the last one)


cdef void keyed_hash_init(KeyedHash* state, const uint8_t* salt, size_t salt_length) noexcept nogil:
    cdef uint8_t[128] block
    cdef int i
    memset(block, 0, 128)
    memcpy(block, salt, salt_length)
    for i in range(8):
        state.keyed[i] = _IV[i]
    state.keyed[0] ^= 0x01010000ULL ^ (<uint64_t>salt_length << 8) ^ 8
    memcpy(state.empty, state.keyed, sizeof(state.empty))
    _compress(state.keyed, block, 128, False)
    _compress(state.empty, block, 128, True)


cdef uint64_t keyed_hash(const KeyedHash* state, const uint8_t* key, size_t length) noexcept nogil:
    """The key's hash as hashlib.blake2b(key, key=salt, digest_size=8) read little-endian."""
    cdef uint64_t[8] h
    cdef uint8_t[128] block
    cdef uint64_t counter = 128
    if length == 0:
        return state.empty[0]
    memcpy(h, state.keyed, sizeof(h))
    while length > 128:
        counter += 128
        _compress(h, key, counter, False)
        key += 128
        length -= 128
    memset(block, 0, 128)
    memcpy(block, key, length)
    _compress(h, block, counter + length, True)
    return h[0]
