"""Keys become keyed 64-bit hashes: the same key always maps to the same hash under one salt, and without the salt
nobody can test a guessed key against the profile.

SipHash-2-4 keyed with the 16-byte salt is a PRF made for short inputs (Python's own str and bytes hashes are
SipHash), so hashes reveal nothing about keys beyond equality; 64 bits keep the chance of two distinct keys colliding
negligible for the key counts a trace holds (about 1e-8 for 1e6 distinct keys). Profiles before schema version 3
hashed with keyed BLAKE2b: their hashes, and their salt fingerprints, differ from these under the same salt.

A salt derived from a team passphrase (so that recordings hash alike) is stretched with scrypt, a memory-hard
KDF: the stored fingerprint then costs an attacker what a password hash would (about 0.1 s and 32 MiB per
guess), not the microsecond a plain hash of the passphrase cost. Its parameters are stored with the profile.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from membench.extensions import compiled

SALT_BYTES = 16
_FINGERPRINT_MESSAGE = b"membench salt fingerprint v2 siphash-2-4"
# Hot keys repeat: a remembered hash costs a dict lookup instead of a SipHash run. The memo lives in memory only
# (the keys are in this process anyway) and is emptied when full, which bounds it at about 25 MB of 250-byte keys.
CACHE_ENTRIES = 1 << 16
_MASK64 = (1 << 64) - 1


def _rotate_left(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (64 - bits))) & _MASK64


def _sip_rounds(v0: int, v1: int, v2: int, v3: int, rounds: int) -> tuple[int, int, int, int]:
    for _ in range(rounds):
        v0 = (v0 + v1) & _MASK64
        v1 = _rotate_left(v1, 13) ^ v0
        v0 = _rotate_left(v0, 32)
        v2 = (v2 + v3) & _MASK64
        v3 = _rotate_left(v3, 16) ^ v2
        v0 = (v0 + v3) & _MASK64
        v3 = _rotate_left(v3, 21) ^ v0
        v2 = (v2 + v1) & _MASK64
        v1 = _rotate_left(v1, 17) ^ v2
        v2 = _rotate_left(v2, 32)
    return v0, v1, v2, v3


def siphash24(salt: bytes, message: bytes) -> int:
    """SipHash-2-4 of `message` under the 16-byte `salt` (Aumasson and Bernstein, 2012), as an unsigned integer."""
    k0 = int.from_bytes(salt[:8], "little")
    k1 = int.from_bytes(salt[8:16], "little")
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573
    whole = len(message) - len(message) % 8
    words = [int.from_bytes(message[i:i + 8], "little") for i in range(0, whole, 8)]
    words.append(((len(message) & 0xFF) << 56) | int.from_bytes(message[whole:], "little"))
    for word in words:
        v3 ^= word
        v0, v1, v2, v3 = _sip_rounds(v0, v1, v2, v3, 2)
        v0 ^= word
    v0, v1, v2, v3 = _sip_rounds(v0, v1, v2 ^ 0xFF, v3, 4)
    return v0 ^ v1 ^ v2 ^ v3


def _key_hash_function() -> Callable[[bytes, bytes], int]:
    """The compiled SipHash where it is built and allowed (trace imports hash every key), else the one above."""
    core = compiled("membench.record._core")
    return siphash24 if core is None else core.siphash24


@dataclass(frozen=True)
class SaltKdf:
    """How a passphrase became the salt: scrypt's parameters, stored in the profile's metadata (`salt_kdf`)."""

    name: str = "scrypt"
    n: int = 1 << 15
    r: int = 8
    p: int = 1
    salt: str = "membench salt kdf v1"  # fixed, so that one passphrase gives one salt on every machine

    def derive(self, passphrase: str) -> bytes:
        return hashlib.scrypt(passphrase.encode(), salt=self.salt.encode(), n=self.n, r=self.r, p=self.p,
                              maxmem=256 * self.r * self.n + (1 << 20), dklen=SALT_BYTES)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class KeyHasher:
    """Maps keys to unsigned 64-bit integers under a secret salt that is never written anywhere."""

    __slots__ = ("_cache", "_fingerprint", "_hash", "_salt")

    def __init__(self, salt: bytes) -> None:
        if len(salt) != SALT_BYTES:
            raise ValueError(f"salt must be {SALT_BYTES} bytes")
        self._salt = salt
        self._hash = _key_hash_function()
        self._fingerprint = f"{siphash24(salt, _FINGERPRINT_MESSAGE):016x}"
        self._cache: dict[bytes, int] = {}

    @classmethod
    def random(cls) -> KeyHasher:
        return cls(secrets.token_bytes(SALT_BYTES))

    @classmethod
    def from_passphrase(cls, passphrase: str, kdf: SaltKdf | None = None) -> KeyHasher:
        """A reproducible salt: recordings made with the same passphrase give the same hashes for the same keys."""
        return cls((kdf or SaltKdf()).derive(passphrase))

    @property
    def salt(self) -> bytes:
        """The secret itself, for the compiled record pipeline, which hashes with its own SipHash."""
        return self._salt

    @property
    def fingerprint(self) -> str:
        """Tells whether two profiles were hashed with the same salt, without revealing it."""
        return self._fingerprint

    def __call__(self, key: bytes) -> int:
        cache = self._cache
        cached = cache.get(key)
        if cached is not None:
            return cached
        value = self._hash(self._salt, key)
        if len(cache) >= CACHE_ENTRIES:
            cache.clear()
        cache[key] = value
        return value

    def keys_for(self, hashes: Iterable[int]) -> dict[int, bytes]:
        """The keys behind `hashes` among those still remembered (hot keys are): for `membench top --show-keys`,
        which shows them on screen and writes them nowhere."""
        wanted = set(hashes)
        return {value: key for key, value in self._cache.items() if value in wanted}

    def __repr__(self) -> str:
        return f"KeyHasher(fingerprint={self._fingerprint})"
