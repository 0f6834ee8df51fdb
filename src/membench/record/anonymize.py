"""Keys become keyed 64-bit hashes: the same key always maps to the same hash under one salt, and without the salt
nobody can test a guessed key against the profile.

BLAKE2b in keyed mode is a PRF, so hashes reveal nothing about keys beyond equality; 64 bits keep the chance of
two distinct keys colliding negligible for the key counts a trace holds (about 1e-8 for 1e6 distinct keys).
"""

from __future__ import annotations

import hashlib
import secrets

SALT_BYTES = 16
_FINGERPRINT_MESSAGE = b"membench salt fingerprint v1"


class KeyHasher:
    """Maps keys to unsigned 64-bit integers under a secret salt that is never written anywhere."""

    __slots__ = ("_fingerprint", "_salt")

    def __init__(self, salt: bytes) -> None:
        if len(salt) != SALT_BYTES:
            raise ValueError(f"salt must be {SALT_BYTES} bytes")
        self._salt = salt
        self._fingerprint = hashlib.blake2b(_FINGERPRINT_MESSAGE, key=salt, digest_size=8).hexdigest()

    @classmethod
    def random(cls) -> KeyHasher:
        return cls(secrets.token_bytes(SALT_BYTES))

    @classmethod
    def from_passphrase(cls, passphrase: str) -> KeyHasher:
        """A reproducible salt: recordings made with the same passphrase give the same hashes for the same keys."""
        return cls(hashlib.blake2b(passphrase.encode(), digest_size=SALT_BYTES, person=b"membench-salt").digest())

    @property
    def fingerprint(self) -> str:
        """Tells whether two profiles were hashed with the same salt, without revealing it."""
        return self._fingerprint

    def __call__(self, key: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(key, key=self._salt, digest_size=8).digest(), "little")

    def __repr__(self) -> str:
        return f"KeyHasher(fingerprint={self._fingerprint})"
