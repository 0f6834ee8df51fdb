"""Keys become keyed 64-bit hashes: the same key always maps to the same hash under one salt, and without the salt
nobody can test a guessed key against the profile.

BLAKE2b in keyed mode is a PRF, so hashes reveal nothing about keys beyond equality; 64 bits keep the chance of
two distinct keys colliding negligible for the key counts a trace holds (about 1e-8 for 1e6 distinct keys).

A salt derived from a team passphrase (so that recordings hash alike) is stretched with scrypt, a memory-hard
KDF: the stored fingerprint then costs an attacker what a password hash would (about 0.1 s and 32 MiB per
guess), not the microsecond a plain hash of the passphrase cost. Its parameters are stored with the profile.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

SALT_BYTES = 16
_FINGERPRINT_MESSAGE = b"membench salt fingerprint v1"
# Hot keys repeat: a remembered hash costs a dict lookup instead of a BLAKE2b run. The memo lives in memory only
# (the keys are in this process anyway) and is emptied when full, which bounds it at about 25 MB of 250-byte keys.
CACHE_ENTRIES = 1 << 16


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

    __slots__ = ("_cache", "_fingerprint", "_keyed", "_salt")

    def __init__(self, salt: bytes) -> None:
        if len(salt) != SALT_BYTES:
            raise ValueError(f"salt must be {SALT_BYTES} bytes")
        self._salt = salt
        # Copying a state that has already absorbed the salt skips the key block's compression on every hash.
        self._keyed = hashlib.blake2b(key=salt, digest_size=8)
        self._fingerprint = hashlib.blake2b(_FINGERPRINT_MESSAGE, key=salt, digest_size=8).hexdigest()
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
        """The secret itself, for the compiled record pipeline, which hashes with its own BLAKE2b."""
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
        state = self._keyed.copy()
        state.update(key)
        value = int.from_bytes(state.digest(), "little")
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
