"""The mesh key set that edges and transceivers share (``VOICEMESH_TOKEN_KEYS``), and keys derived from it for
one purpose each, so one secret to deploy and rotate serves the routing token, the client token and the hop
signature, and a MAC made for one purpose never verifies for another."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

MIN_SECRET_LENGTH = 16
"""Shortest mesh key secret accepted, bytes."""


@dataclass(frozen=True)
class MeshKeys:
    """Key id (0..255) -> secret (at least 16 bytes), and the id new MACs are made with.

    Verifiers accept every id in ``keys``, so the previous key keeps working during a rotation.
    Raises ValueError for a bad key set (the message never holds a secret).
    """

    keys: Mapping[int, bytes]
    current_key_id: int

    def __post_init__(self) -> None:
        if self.current_key_id not in self.keys:
            raise ValueError(f"current key id {self.current_key_id} is not among the keys {sorted(self.keys)}")
        for key_id, secret in self.keys.items():
            if not 0 <= key_id <= 0xFF:
                raise ValueError(f"key id must be in 0..255, got {key_id}")
            if len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(f"mesh key {key_id}: secret must be at least {MIN_SECRET_LENGTH} bytes, got {len(secret)}")

    @classmethod
    def from_spec(cls, spec: str) -> MeshKeys:
        """Parse ``"1:<hex secret>,0:<hex secret>"`` (``VOICEMESH_TOKEN_KEYS``): the first
        entry is the current key. Raises ValueError naming the bad entry, never its secret."""
        keys: dict[int, bytes] = {}
        for number, entry in enumerate(spec.split(","), start=1):
            key_id_text, colon, secret_hex = entry.strip().partition(":")
            if not colon:
                raise ValueError(f"mesh key spec entry {number} must look like '<key id>:<hex secret>'")
            try:
                key_id = int(key_id_text)
            except ValueError:
                raise ValueError(f"mesh key spec entry {number}: key id {key_id_text!r} is not an integer") from None
            if key_id in keys:
                raise ValueError(f"mesh key spec entry {number}: key id {key_id} appears twice")
            try:
                keys[key_id] = bytes.fromhex(secret_hex)
            except ValueError:
                raise ValueError(f"mesh key spec entry {number}: the secret for key {key_id} is not hex") from None
        return cls(keys, next(iter(keys)))

    def derive(self, purpose: bytes) -> MeshKeys:
        """The same key ids, each secret replaced by HMAC-SHA256(secret, "voicemesh key v1 " + purpose)
        (32 bytes): a key for ``purpose`` only (for example ``b"client-token"``)."""
        return MeshKeys({key_id: hmac.digest(secret, b"voicemesh key v1 " + purpose, "sha256")
                         for key_id, secret in self.keys.items()}, self.current_key_id)
