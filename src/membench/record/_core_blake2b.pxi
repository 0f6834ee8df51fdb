# Keyed BLAKE2b with an 8-byte digest (RFC 7693), the hash of record/anonymize.py's KeyHasher: a key hashes to the
# same 64-bit value here as in hashlib, so profiles of both pipelines (and of earlier versions) agree under one salt.
# The state after the salt block is computed once; each key then costs one compression per 128 bytes of key.

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

cdef uint64_t[8] _IV = [
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
]

cdef extern from *:
    """
    /* BLAKE2b's compression function (RFC 7693, section 3.2), with the mixing function G as a macro over named
       locals and the twelve rounds spelled out, so that the compiler keeps the working vector in registers. */
    #define MB_ROTR64(x, n) (((x) >> (n)) | ((x) << (64 - (n))))
    #define MB_G(a, b, c, d, x, y) do { \
        a = a + b + (x); d = MB_ROTR64(d ^ a, 32); c = c + d; b = MB_ROTR64(b ^ c, 24); \
        a = a + b + (y); d = MB_ROTR64(d ^ a, 16); c = c + d; b = MB_ROTR64(b ^ c, 63); } while (0)
    #define MB_ROUND(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15) do { \
        MB_G(v0, v4, v8, v12, m[s0], m[s1]); MB_G(v1, v5, v9, v13, m[s2], m[s3]); \
        MB_G(v2, v6, v10, v14, m[s4], m[s5]); MB_G(v3, v7, v11, v15, m[s6], m[s7]); \
        MB_G(v0, v5, v10, v15, m[s8], m[s9]); MB_G(v1, v6, v11, v12, m[s10], m[s11]); \
        MB_G(v2, v7, v8, v13, m[s12], m[s13]); MB_G(v3, v4, v9, v14, m[s14], m[s15]); } while (0)
    static void mb_blake2b_compress(uint64_t *h, const uint8_t *block, const uint64_t *iv, uint64_t counter,
                                    int last) {
        uint64_t m[16];
        memcpy(m, block, 128); /* little-endian words, as on every machine this builds for */
        uint64_t v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3], v4 = h[4], v5 = h[5], v6 = h[6], v7 = h[7];
        uint64_t v8 = iv[0], v9 = iv[1], v10 = iv[2], v11 = iv[3], v12 = iv[4] ^ counter, v13 = iv[5];
        uint64_t v14 = last ? ~iv[6] : iv[6], v15 = iv[7];
        MB_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        MB_ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3);
        MB_ROUND(11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4);
        MB_ROUND(7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8);
        MB_ROUND(9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13);
        MB_ROUND(2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9);
        MB_ROUND(12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11);
        MB_ROUND(13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10);
        MB_ROUND(6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5);
        MB_ROUND(10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0);
        MB_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        MB_ROUND(14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3);
        h[0] ^= v0 ^ v8; h[1] ^= v1 ^ v9; h[2] ^= v2 ^ v10; h[3] ^= v3 ^ v11;
        h[4] ^= v4 ^ v12; h[5] ^= v5 ^ v13; h[6] ^= v6 ^ v14; h[7] ^= v7 ^ v15;
    }
    """
    void mb_blake2b_compress(uint64_t* h, const uint8_t* block, const uint64_t* iv, uint64_t counter,
                             int last) nogil


cdef inline void _compress(uint64_t* h, const uint8_t* block, uint64_t counter, bint last) noexcept nogil:
    mb_blake2b_compress(h, block, _IV, counter, last)


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


# Hot keys repeat (as KeyHasher's memo in anonymize.py knows): a direct-mapped memo of recent keys and their hashes
# turns a compression (a few hundred ns) into a cheap index, a compare and a load. Equality is checked on the
# whole key, so the memo changes no hash; a key longer than a slot holds is always hashed.
cdef enum:
    MEMO_SLOTS = 1 << 16  # 64 Ki slots of 128 bytes: 8 MiB
    MEMO_KEY_MAX = 119


cdef struct MemoSlot:
    uint64_t value
    uint8_t length  # 0: empty
    uint8_t[MEMO_KEY_MAX] key


cdef inline uint64_t _memo_index(const uint8_t* key, size_t length) noexcept nogil:
    cdef uint64_t h = length * 0x9E3779B97F4A7C15ULL, word
    cdef size_t i = 0
    while i + 8 <= length:
        memcpy(&word, key + i, 8)
        h = (h ^ word) * 0xFF51AFD7ED558CCDULL
        h ^= h >> 32
        i += 8
    word = 0
    memcpy(&word, key + i, length - i)
    h = (h ^ word) * 0xFF51AFD7ED558CCDULL
    return (h ^ (h >> 29)) & (MEMO_SLOTS - 1)


cdef extern from *:
    """
    #define MB_PREFETCH(address) __builtin_prefetch(address)
    """
    void MB_PREFETCH(const void* address) noexcept nogil


cdef inline void memo_prefetch(MemoSlot* memo, const uint8_t* key, size_t length) noexcept nogil:
    """Start loading the key's slot when the request is read: the reply comes later, and by the time its row is
    made the slot is in the cache instead of a memory access away (the memo is larger than the caches)."""
    cdef const uint8_t* slot
    if 0 < length <= MEMO_KEY_MAX:
        slot = <const uint8_t*>&memo[_memo_index(key, length)]
        MB_PREFETCH(slot)
        MB_PREFETCH(slot + 64)


cdef uint64_t memo_hash(const KeyedHash* state, MemoSlot* memo, const uint8_t* key, size_t length) noexcept nogil:
    """keyed_hash, remembered for keys of up to MEMO_KEY_MAX bytes."""
    cdef MemoSlot* slot
    if length == 0 or length > MEMO_KEY_MAX:
        return keyed_hash(state, key, length)
    slot = &memo[_memo_index(key, length)]
    if slot.length == length and memcmp(slot.key, key, length) == 0:
        return slot.value
    slot.value = keyed_hash(state, key, length)
    slot.length = <uint8_t>length
    memcpy(slot.key, key, length)
    return slot.value
