"""The hop signature: an edge signs each request it makes to a transceiver's API, so a transceiver takes
offers, hop headers and DELETEs only from a holder of the mesh key, and never the same request twice.

``Voicemesh-Signature: t=<unix s>,k=<key id>,v1=<hex HMAC-SHA256>`` over the method, the path with query,
the transceiver's node id, a SHA-256 of the body, the hop headers (voicemesh/wire/signaling.py) and the
time. The key is derived from the mesh key set (purpose ``hop``): edges and transceivers hold it already,
rotation follows the mesh key's, and a hop MAC never verifies as a routing or client token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .meshkeys import MeshKeys
from .replay import ReplayCache, ReplayCacheFull
from .signaling import CLIENT_ADDRESS, EDGE_ID, RELAY_ADDRESS, RELAY_TCP_ADDRESS

SIGNATURE = "Voicemesh-Signature"
"""The request header that carries the signature."""

WINDOW_S = 30
"""A signature is accepted while its time is within this many seconds of the transceiver's clock."""

REPLAY_CAPACITY = 65536
"""Signatures a verifier remembers at most (each until it is stale, at most 2 * WINDOW_S + 1 s)."""

_VALUE = re.compile(r"t=(\d{1,12}),k=(\d{1,3}),v1=([0-9a-f]{64})")


class BadSignature(ValueError):
    """A request whose hop signature does not hold.

    ``reason`` is a counter label: "missing", "malformed", "stale", "unknown_key", "mac", "replayed",
    or "busy" (the replay memory is full: refuse, retry later).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"bad hop signature: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HopRequest:
    """What a signature covers: ``method`` (upper case), ``path`` (with query, as sent), ``transceiver``
    (the receiving transceiver's node id), ``body`` (bytes as sent) and the hop headers ("" if absent)."""

    method: str
    path: str
    transceiver: str
    body: bytes = b""
    edge_id: str = ""
    relay_address: str = ""
    client_address: str = ""
    relay_tcp_address: str = ""

    @classmethod
    def from_headers(cls, method: str, path: str, transceiver: str, body: bytes,
                     headers: Mapping[str, str]) -> HopRequest:
        """The request with its hop headers read from ``headers`` (a case-insensitive mapping on the
        transceiver's side; the dict the edge sends on its side)."""
        return cls(method.upper(), path, transceiver, body, headers.get(EDGE_ID, ""),
                   headers.get(RELAY_ADDRESS, ""), headers.get(CLIENT_ADDRESS, ""),
                   headers.get(RELAY_TCP_ADDRESS, ""))

    def canonical(self, t: int, key_id: int) -> bytes:
        """The bytes the MAC is computed over: one field per line (header values hold no line breaks). The
        ICE-TCP relay address, when present, is one more line, so a request without it signs as before."""
        fields = ["voicemesh-hop-v1", str(t), str(key_id), self.method, self.path, self.transceiver,
                  hashlib.sha256(self.body).hexdigest(), self.edge_id, self.relay_address, self.client_address]
        if self.relay_tcp_address:
            fields.append(self.relay_tcp_address)
        return "\n".join(fields).encode()


class HopSigner:
    """Signs requests with the current hop key (an edge's side)."""

    def __init__(self, keys: MeshKeys) -> None:
        self._keys = keys.derive(b"hop")

    def sign(self, request: HopRequest, now: float) -> str:
        """The ``Voicemesh-Signature`` value for ``request`` at ``now`` (unix seconds)."""
        t, key_id = int(now), self._keys.current_key_id
        mac = hmac.new(self._keys.keys[key_id], request.canonical(t, key_id), "sha256").hexdigest()
        return f"t={t},k={key_id},v1={mac}"


class HopVerifier:
    """Checks signatures (a transceiver's side) and remembers the ones it accepted, so each is used once.

    Any key of the set verifies.
    """

    def __init__(self, keys: MeshKeys, capacity: int = REPLAY_CAPACITY) -> None:
        self._keys = keys.derive(b"hop")
        self._seen = ReplayCache(capacity)

    def verify(self, value: str | None, request: HopRequest, now: float) -> int:
        """Check ``value`` (the header, None if absent) for ``request`` at ``now`` (unix seconds); returns the
        key id. Raises BadSignature with the first failure, in this order: "missing", "malformed", "stale"
        (more than WINDOW_S from ``now``), "unknown_key", "mac", "replayed", "busy"."""
        if value is None:
            raise BadSignature("missing")
        match = _VALUE.fullmatch(value.strip())
        if match is None:
            raise BadSignature("malformed")
        t, key_id, mac = int(match[1]), int(match[2]), match[3]
        if abs(now - t) > WINDOW_S:
            raise BadSignature("stale")
        key = self._keys.keys.get(key_id)
        if key is None:
            raise BadSignature("unknown_key")
        if not hmac.compare_digest(hmac.new(key, request.canonical(t, key_id), "sha256").hexdigest(), mac):
            raise BadSignature("mac")
        try:
            fresh = self._seen.remember(bytes.fromhex(mac), t + WINDOW_S + 1, now)  # from then on: stale
        except ReplayCacheFull:
            raise BadSignature("busy") from None
        if not fresh:
            raise BadSignature("replayed")
        return key_id
