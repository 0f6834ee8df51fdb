# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled twin of the long-key path of replay/keys.py's KeySynthesizer.keys: a key of 10 characters or more is
the hash's 10 base-94 digits followed by the digits of its splitmix64 mix, repeated to the key's length, made here
straight into the bytes object instead of through numpy matrices and a slice per key."""

from libc.stdint cimport int64_t, uint64_t
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from membench.replay.keys import ALPHABET, INJECTIVE_LENGTH

# Constants the C compiler sees, so that dividing by the base is a multiplication: 20 divisions a key.
cdef enum:
    BASE = 94
    DIGITS = 10
cdef bytes _ALPHABET = ALPHABET
assert len(ALPHABET) == BASE and INJECTIVE_LENGTH == DIGITS, "keys.py's alphabet and key digits changed"


include "_splitmix.pxi"


cdef inline void _digits(uint64_t number, char* out, const char* alphabet) noexcept:
    cdef Py_ssize_t index
    for index in range(DIGITS - 1, -1, -1):
        out[index] = alphabet[number % <uint64_t>BASE]
        number //= <uint64_t>BASE


def long_keys(const uint64_t[::1] hashes, const int64_t[::1] lengths):
    """The key of every (hash, length) pair, each length at least 10."""
    cdef Py_ssize_t row, position, length
    cdef const char* alphabet = PyBytes_AS_STRING(_ALPHABET)
    cdef char[10] filler
    cdef char* out
    cdef bytes key
    cdef list keys = []
    for row in range(hashes.shape[0]):
        length = lengths[row]
        if length < DIGITS:
            raise ValueError(f"a long key has at least {DIGITS} characters, not {length}")
        key = PyBytes_FromStringAndSize(NULL, length)
        out = PyBytes_AS_STRING(key)
        _digits(hashes[row], out, alphabet)
        _digits(splitmix64(hashes[row]), filler, alphabet)
        for position in range(length - DIGITS):
            out[DIGITS + position] = filler[position % DIGITS]
        keys.append(key)
    return keys
