"""The client token: a short-lived bearer that an app's backend obtains with its API key and hands to a
browser, which presents it on its WHIP POST (RFC 9725 4.5, RFC 6750). Any edge checks it with the mesh key,
no database round trip: a MAC over the key id, expiry, nonce and the origin and region it is bound to.

Replays: the edge that sees a token remembers its nonce until the token expires (voicemesh/wire/replay.py),
so one token opens one session there. The other edges do not share that memory, so within the token's life
(at most ``MAX_TTL_S``) it could open one more session at each other edge. That is accepted: a token is
handed to one browser over TLS and lives seconds; a thief gains at most one session per edge, still billed
to the app's key, and sharing nonces across edges would put a shared store on every offer's path. Binding
the token to one edge is not possible from the app's backend: which edge the browser reaches is decided
later, by the geo DNS answer to the browser's resolver.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import struct
from dataclasses import dataclass

from .meshkeys import MeshKeys

PREFIX = "vmct1_"
"""Start of every client token (format version 1), so it is told apart from an API key at a glance."""

MAX_TTL_S = 60
"""Longest life of a client token, seconds."""

NONCE_LENGTH = 16
"""Random bytes per token; the replay memory is keyed by them."""

MAX_ORIGIN_LENGTH = 255
MAX_REGION_LENGTH = 63
_HEAD = struct.Struct(">BI16s")  # key id, expires_at (unix s), nonce
_MAC_LENGTH = 16
_MAX_RAW = _HEAD.size + 1 + MAX_ORIGIN_LENGTH + 1 + MAX_REGION_LENGTH + _MAC_LENGTH
_MAX_VALUE = len(PREFIX) + (_MAX_RAW * 4 + 2) // 3
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[a-z0-9.:\[\]-]+")
_REGION = re.compile(r"[A-Za-z0-9._-]+")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class BadClientToken(ValueError):
    """A bearer that is not a valid client token for this request.

    ``reason`` is a counter label: "format", "unknown_key", "mac", "expired", "origin" or "region".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"bad client token: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ClientToken:
    """A verified token's fields: mesh key id, expiry (unix seconds), nonce, and the origin and region it is
    bound to ("" for none)."""

    key_id: int
    expires_at: int
    nonce: bytes
    origin: str
    region: str


def normalize_origin(origin: str) -> str:
    """``origin`` as compared with a browser's ``Origin`` header (RFC 6454 7): lowercased, no trailing "/".

    Raises ValueError unless it is ``scheme://host[:port]`` of at most 255 characters.
    """
    text = origin.strip().lower().removesuffix("/")
    if len(text) > MAX_ORIGIN_LENGTH or not _ORIGIN.fullmatch(text):
        raise ValueError(f"origin must look like https://app.example.com[:port] (at most {MAX_ORIGIN_LENGTH} chars)")
    return text


def check_region(region: str) -> str:
    """``region`` if it is a region name (1..63 of [A-Za-z0-9._-]); raises ValueError otherwise."""
    if len(region) > MAX_REGION_LENGTH or not _REGION.fullmatch(region):
        raise ValueError(f"region must be 1..{MAX_REGION_LENGTH} characters of [A-Za-z0-9._-]")
    return region


class ClientTokenCodec:
    """Issues and verifies client tokens with keys derived from the mesh keys (purpose ``client-token``).

    Layout before encoding: key_id u8 | expires_at u32 (unix s) | nonce 16 bytes | origin length u8 | origin
    | region length u8 | region | HMAC-SHA256(key, all before)[:16]. The value is ``vmct1_`` and that in
    base64url without padding (RFC 4648 5), within RFC 6750's b64token alphabet. New tokens use the
    current key; all keys of the set verify, so a rotation does not cut issued tokens short.
    """

    def __init__(self, keys: MeshKeys) -> None:
        self._keys = keys.derive(b"client-token")

    def issue(self, *, now: float, ttl_s: int, nonce: bytes, origin: str = "", region: str = "") -> tuple[str, int]:
        """A token valid for ``ttl_s`` seconds (1..60) from ``now`` (unix seconds): ``(value, expires_at)``.

        ``nonce`` is 16 random bytes, new for every token. ``origin`` ("" for any) and ``region`` ("" for
        any) bind it (see ``verify``). Raises ValueError for a field out of range.
        """
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be in 1..{MAX_TTL_S}, got {ttl_s}")
        if len(nonce) != NONCE_LENGTH:
            raise ValueError(f"nonce must be {NONCE_LENGTH} bytes, got {len(nonce)}")
        origin_bytes = normalize_origin(origin).encode() if origin else b""
        region_bytes = check_region(region).encode() if region else b""
        expires_at = int(now) + ttl_s
        body = (_HEAD.pack(self._keys.current_key_id, expires_at, nonce) + bytes([len(origin_bytes)]) + origin_bytes
                + bytes([len(region_bytes)]) + region_bytes)
        mac = hmac.digest(self._keys.keys[self._keys.current_key_id], body, "sha256")[:_MAC_LENGTH]
        return PREFIX + base64.urlsafe_b64encode(body + mac).decode("ascii").rstrip("="), expires_at

    def verify(self, value: str, *, now: float | None, origin: str | None, region: str | None) -> ClientToken:
        """Check ``value`` for a request and return its fields.

        ``now`` (unix seconds) must be before the expiry; None skips that check (a DELETE of the session the
        token opened may come after it expired). ``origin`` is the request's ``Origin`` header (None if
        absent): a token bound to an origin needs exactly that origin. ``region`` is the region the request
        pins (None if it pins none): a token bound to a region refuses another. Raises BadClientToken with
        the first failure, in this order: "format", "unknown_key", "mac", "expired", "origin", "region".
        """
        encoded = value.removeprefix(PREFIX)
        if encoded == value or len(value) > _MAX_VALUE or not _BASE64URL.fullmatch(encoded):
            raise BadClientToken("format")
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except binascii.Error:
            raise BadClientToken("format") from None
        if len(raw) < _HEAD.size + 2 + _MAC_LENGTH:
            raise BadClientToken("format")
        body, mac = raw[:-_MAC_LENGTH], raw[-_MAC_LENGTH:]
        key = self._keys.keys.get(body[0])
        if key is None:
            raise BadClientToken("unknown_key")
        if not hmac.compare_digest(hmac.digest(key, body, "sha256")[:_MAC_LENGTH], mac):
            raise BadClientToken("mac")
        key_id, expires_at, nonce = _HEAD.unpack_from(body)
        origin_end = _HEAD.size + 1 + body[_HEAD.size]
        if origin_end + 1 > len(body) or origin_end + 1 + body[origin_end] != len(body):
            raise BadClientToken("format")
        token = ClientToken(key_id, expires_at, nonce, body[_HEAD.size + 1:origin_end].decode("ascii", "replace"),
                            body[origin_end + 1:].decode("ascii", "replace"))
        if now is not None and now >= expires_at:
            raise BadClientToken("expired")
        if token.origin and (origin or "").strip().lower().removesuffix("/") != token.origin:
            raise BadClientToken("origin")
        if token.region and region and region != token.region:
            raise BadClientToken("region")
        return token
