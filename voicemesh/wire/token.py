"""The routing token: the server ICE ufrag that a transceiver mints and the edge relay checks, so the first
STUN Binding request carries its own route, MAC'd with a mesh key (README "Contracts": routing token)."""

import base64
import binascii
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from voicemesh.wire.meshkeys import MeshKeys

UFRAG_LENGTH = 36
"""Characters in a token ufrag: 27 bytes in base64 without padding, within ICE's 4..256 ice-chars."""

_FIELDS = struct.Struct(">BBHIII")  # key_id, region, transceiver, nonce, issued_at, expires_at: 16 bytes
_MAC_LENGTH = 11
_RAW_LENGTH = _FIELDS.size + _MAC_LENGTH


class BadToken(ValueError):
    """A ufrag that is not a valid routing token.

    `reason` is a counter label: "length", "alphabet", "unknown_key", "mac" or "expired".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"bad routing token: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RoutingToken:
    """The fields of a verified token: mesh key id, region id, transceiver id within the region, a per-session
    nonce, when it was minted and when it expires (unix seconds, the minting transceiver's clock).

    Tokens compare and hash by all fields, so a RoutingToken is the key the relay keeps per-token state under.
    """

    key_id: int
    region: int
    transceiver: int
    nonce: int
    issued_at: int
    expires_at: int


def _check_range(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} must be in 0..{maximum}, got {value}")


class TokenCodec:
    """Mints and verifies routing tokens with a set of mesh keys.

    Layout (big endian, 27 bytes): key_id u8 | region u8 | transceiver u16 | nonce u32 | issued_at u32 |
    expires_at u32 | HMAC-SHA256(key, first 16 bytes)[:11]. Encoded as standard base64 without padding:
    exactly 36 chars of [A-Za-z0-9+/], the ice-char alphabet (RFC 8445 section 5.3, RFC 8839 section 5.4).
    `issued_at` lets the relay open full flows only in a short window after the answer (edge/relay_core.py).

    `keys` maps key id (0..255) to a secret of at least 16 bytes. Tokens are minted with `current_key_id`
    and verified with any key in the map, so the previous key keeps working during a rotation.
    `mesh_keys` is the key set, for keys derived from it. Raises ValueError for a bad key set.
    """

    def __init__(self, keys: Mapping[int, bytes], current_key_id: int) -> None:
        self.mesh_keys = MeshKeys(keys, current_key_id)  # validates the key set
        self._keys = dict(keys)
        self.current_key_id = current_key_id

    @classmethod
    def from_mesh_keys(cls, keys: MeshKeys) -> Self:
        """A codec over the mesh key set (the routing token uses the mesh secrets themselves)."""
        return cls(keys.keys, keys.current_key_id)

    @classmethod
    def from_spec(cls, spec: str) -> Self:
        """Build a codec from "1:<hex secret>,0:<hex secret>" (config or environment; MeshKeys.from_spec):
        the first entry is the current key, the others are still accepted. Raises ValueError naming the bad
        entry, never its secret."""
        return cls.from_mesh_keys(MeshKeys.from_spec(spec))

    def mint(self, *, region: int, transceiver: int, nonce: int, issued_at: int, lifetime_s: int) -> str:
        """Return the 36-char ufrag for these fields under the current key.

        `nonce` must be random per session (at least 24 random bits) so every session's ufrag is unique;
        `issued_at` is now in unix seconds, and the token expires `lifetime_s` seconds later. Raises ValueError
        if a field does not fit its width (issued_at and issued_at + lifetime_s: 0..2**32-1, lifetime_s >= 0).
        """
        _check_range("region", region, 0xFF)
        _check_range("transceiver", transceiver, 0xFFFF)
        _check_range("nonce", nonce, 0xFFFF_FFFF)
        _check_range("issued_at", issued_at, 0xFFFF_FFFF)
        _check_range("lifetime_s", lifetime_s, 0xFFFF_FFFF - issued_at)
        fields = _FIELDS.pack(self.current_key_id, region, transceiver, nonce, issued_at, issued_at + lifetime_s)
        mac = hmac.digest(self._keys[self.current_key_id], fields, "sha256")[:_MAC_LENGTH]
        return base64.b64encode(fields + mac).decode("ascii")

    def verify(self, ufrag: bytes | str, now: float) -> RoutingToken:
        """Check a ufrag (bytes as read from STUN USERNAME, or str) and return its fields.

        A token is valid while `now` (unix seconds) < expires_at. Checks run in this order and raise
        BadToken with the reason of the first failure: "length", "alphabet", "unknown_key", "mac", "expired".
        """
        if len(ufrag) != UFRAG_LENGTH:
            raise BadToken("length")
        try:
            raw = binascii.a2b_base64(ufrag, strict_mode=True)
        except ValueError:
            raise BadToken("alphabet") from None
        if len(raw) != _RAW_LENGTH:  # 36 chars decode to fewer bytes only when they end in '=' padding
            raise BadToken("alphabet")
        key = self._keys.get(raw[0])
        if key is None:
            raise BadToken("unknown_key")
        fields = raw[: _FIELDS.size]
        if not hmac.compare_digest(hmac.digest(key, fields, "sha256")[:_MAC_LENGTH], raw[_FIELDS.size :]):
            raise BadToken("mac")
        key_id, region, transceiver, nonce, issued_at, expires_at = _FIELDS.unpack(fields)
        if now >= expires_at:
            raise BadToken("expired")
        return RoutingToken(key_id, region, transceiver, nonce, issued_at, expires_at)
