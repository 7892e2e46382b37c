"""WHIP session ids that any edge can recognise as issued by this mesh, without asking anyone: the random id of
a session URL carries a MAC, so after the session ended (and its claim is gone from the registry) an edge
still tells "this mesh's session, ended" (a DELETE answers 200) from "never a session" (404)."""

from __future__ import annotations

import base64
import binascii
import hmac

from .meshkeys import MeshKeys

RANDOM_BYTES = 14
"""Random bytes per id (112 bits): the id is also the session URL's capability, with the bearer."""

_MAC_BYTES = 12
ID_LENGTH = 36
"""Characters in an id: key id u8, RANDOM_BYTES, MAC: 27 bytes of base64url (RFC 4648 5) without padding."""


class SessionIds:
    """Mints and recognises session ids with a key derived from the mesh keys (purpose ``session-id``).

    Layout before encoding: key id u8 | random (RANDOM_BYTES) | HMAC-SHA256(key, the first 15 bytes)[:12].
    New ids use the current key; every key of the set recognises, so ids outlive a rotation.
    """

    def __init__(self, keys: MeshKeys) -> None:
        self._keys = keys.derive(b"session-id")

    def mint(self, random: bytes) -> str:
        """A new id around ``random`` (RANDOM_BYTES fresh random bytes). Raises ValueError for another length."""
        if len(random) != RANDOM_BYTES:
            raise ValueError(f"a session id needs {RANDOM_BYTES} random bytes, got {len(random)}")
        key_id = self._keys.current_key_id
        head = bytes([key_id]) + random
        mac = hmac.digest(self._keys.keys[key_id], head, "sha256")[:_MAC_BYTES]
        return base64.urlsafe_b64encode(head + mac).decode("ascii")

    def issued(self, session_id: str) -> bool:
        """Whether ``session_id`` was minted by a holder of the mesh keys (any key of the set)."""
        if len(session_id) != ID_LENGTH:
            return False
        try:
            raw = base64.urlsafe_b64decode(session_id.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError):
            return False
        if len(raw) != 1 + RANDOM_BYTES + _MAC_BYTES:
            return False
        key = self._keys.keys.get(raw[0])
        head = raw[: 1 + RANDOM_BYTES]
        return key is not None and hmac.compare_digest(hmac.digest(key, head, "sha256")[:_MAC_BYTES], raw[len(head):])
