"""An edge's API keys: the secrets app backends present to get client tokens (``POST /v1/client_secrets``) or
to call the WHIP front themselves. Each has an id, so keys rotate (add the new one, move the backends, drop
the old one) and logs name the id, never the secret."""

from __future__ import annotations

import hashlib
import hmac
import re

MIN_SECRET_LENGTH = 16
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SECRET = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750 2.1 b64token: it travels as a bearer


class ApiKeys:
    """Key id -> secret. ``match(bearer)`` compares in constant time with every key.

    Raises ValueError for a bad set (the message names the entry, never its secret).
    """

    def __init__(self, keys: dict[str, str]) -> None:
        for key_id, secret in keys.items():
            if not _ID.fullmatch(key_id):
                raise ValueError(f"API key id {key_id!r} must be 1..64 of [A-Za-z0-9._-]")
            if len(secret) < MIN_SECRET_LENGTH or not _SECRET.fullmatch(secret):
                raise ValueError(f"API key {key_id}: the secret must be at least {MIN_SECRET_LENGTH} characters"
                                 " of [A-Za-z0-9._~+/-]")
        self._digests = {key_id: hashlib.sha256(secret.encode()).digest() for key_id, secret in keys.items()}

    def __bool__(self) -> bool:
        return bool(self._digests)

    @classmethod
    def from_spec(cls, spec: str) -> ApiKeys:
        """Parse ``"<id>:<secret>,<id>:<secret>"`` (config or environment; "" for none)."""
        keys: dict[str, str] = {}
        for number, entry in enumerate(filter(None, (e.strip() for e in spec.split(","))), start=1):
            key_id, colon, secret = entry.partition(":")
            if not colon:
                raise ValueError(f"API key entry {number} must look like '<id>:<secret>'")
            if key_id in keys:
                raise ValueError(f"API key entry {number}: id {key_id!r} appears twice")
            keys[key_id] = secret
        return cls(keys)

    def match(self, bearer: str) -> str | None:
        """The id of the key ``bearer`` is, or None. Every key is compared (SHA-256 digests, in constant
        time), so the time taken says nothing about which key or how much of it matched."""
        digest = hashlib.sha256(bearer.encode()).digest()
        found = None
        for key_id, known in self._digests.items():
            if hmac.compare_digest(digest, known):
                found = key_id
        return found
