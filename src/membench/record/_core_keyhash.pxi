# SipHash-2-4 (Aumasson and Bernstein, 2012), the keyed hash of record/anonymize.py's KeyHasher: a PRF made for short
# inputs, with the 16-byte salt as its key. A key hashes to the same 64-bit value here as in the specification.

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcmp, memcpy

cdef extern from *:
    """
    /* The SipRound of the paper, over four named locals, so that the compiler keeps the state in registers. */
    #define MB_ROTL64(x, n) (((x) << (n)) | ((x) >> (64 - (n))))
    #define MB_SIPROUND do { \
        v0 += v1; v1 = MB_ROTL64(v1, 13); v1 ^= v0; v0 = MB_ROTL64(v0, 32); \
        v2 += v3; v3 = MB_ROTL64(v3, 16); v3 ^= v2; \
        v0 += v3; v3 = MB_ROTL64(v3, 21); v3 ^= v0; \
        v2 += v1; v1 = MB_ROTL64(v1, 17); v1 ^= v2; v2 = MB_ROTL64(v2, 32); } while (0)
    static uint64_t mb_siphash24(uint64_t k0, uint64_t k1, const uint8_t *message, size_t length) {
        uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
        uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
        uint64_t word, last = (uint64_t)length << 56;
        size_t whole = length & ~(size_t)7;
        for (size_t i = 0; i < whole; i += 8) {
            memcpy(&word, message + i, 8); /* little-endian words, as on every machine this builds for */
            v3 ^= word;
            MB_SIPROUND; MB_SIPROUND;
            v0 ^= word;
        }
        word = 0;
        memcpy(&word, message + whole, length - whole);
        last |= word;
        v3 ^= last;
        MB_SIPROUND; MB_SIPROUND;
        v0 ^= last;
        v2 ^= 0xff;
        MB_SIPROUND; MB_SIPROUND; MB_SIPROUND; MB_SIPROUND;
        return v0 ^ v1 ^ v2 ^ v3;
    }
    """
    uint64_t mb_siphash24(uint64_t k0, uint64_t k1, const uint8_t* message, size_t length) nogil


cdef struct KeyedHash:
    uint64_t k0  # the salt's two halves, read little-endian
    uint64_t k1


cdef void keyed_hash_init(KeyedHash* state, const uint8_t* salt) noexcept nogil:
    """`salt` is SALT_BYTES (16) long: the constructor checks."""
    memcpy(&state.k0, salt, 8)
    memcpy(&state.k1, salt + 8, 8)


cdef inline uint64_t keyed_hash(const KeyedHash* state, const uint8_t* key, size_t length) noexcept nogil:
    return mb_siphash24(state.k0, state.k1, key, length)


def siphash24(bytes salt not None, bytes key not None):
    """anonymize.siphash24, compiled: SipHash-2-4 of `key` (bytes) under the 16-byte `salt`."""
    cdef KeyedHash state
    if len(salt) != 16:
        raise ValueError("salt must be 16 bytes")
    keyed_hash_init(&state, salt)
    return keyed_hash(&state, key, len(key))


# `membench top --show-keys` shows the real keys behind hot hashes: a direct-mapped memo of recent keys and their
# hashes, kept in memory only, by pipelines that are asked to remember keys. Equality is checked on the whole key, so
# the memo changes no hash; a key longer than a slot holds is hashed and not remembered. `record` keeps no memo: a
# SipHash costs about what a lookup in a memo larger than the caches did.
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
