"""CORS for the WHIP front (Fetch standard, "CORS protocol"; RFC 9725 4.1): which web pages on other origins may
call the mesh, and the OPTIONS answers.

Origins are granted from an allow-list (``EdgeConfig.cors_origins``): a page whose ``Origin`` is on it gets
``Access-Control-Allow-Origin`` naming that origin (with ``Vary: Origin``, so caches keep one answer per
origin), on the preflight and on the actual response; any other origin gets no grant, and its browser
blocks the call. ``*`` grants every origin, and only when it is configured. The bearer (an API key or a
client token), never a cookie, authorizes a WHIP request, so credentials mode is not granted.

An OPTIONS on a WHIP URL is answered ``200`` with ``Allow``, ``Accept-Post: application/sdp`` on the
endpoint (RFC 9725 4.1) and ``Accept-Patch: application/trickle-ice-sdpfrag`` on a session (RFC 5789 3.1),
with or without a grant.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from aiohttp import web

from voicemesh.wire.clienttoken import normalize_origin
from voicemesh.wire.signaling import SDP_TYPE, TRICKLE_TYPE

ALLOW_HEADERS = ("Authorization", "Content-Type", "If-Match", "Voicemesh-Region")
"""Request headers a page may send: the bearer, the body's type, the ICE session's ETag for PATCH, a region
pin."""

EXPOSE_HEADERS = ("Location", "Link", "ETag", "Accept-Patch", "Retry-After", "Voicemesh-Edge", "Voicemesh-Region")
"""Response headers a page may read: the session URL, ICE servers (RFC 9725 4.6), the ICE session's entity
tag, when to retry a refusal, and the edge and core region serving the call (edge/whip.py)."""

MAX_AGE_S = 600
"""Seconds a browser may reuse a preflight's answer."""


class Cors:
    """The origins granted CORS, and the pieces that grant it.

    ``origins``: entries ``scheme://host[:port]`` (compared lowercased, as browsers send them, RFC 6454
    6.2) or ``*``. ``paths``: URL path prefixes the grant covers (the WHIP endpoint and its sessions, and the
    OpenAI Realtime-compatible endpoint and its calls).
    ``counters`` counts ``cors_granted`` and ``cors_refused`` (requests from an origin not on the list).
    Raises ValueError naming a malformed entry.
    """

    def __init__(self, origins: Iterable[str], paths: tuple[str, ...] = ("/v1/sessions", "/v1/realtime/calls")) -> None:
        entries = [entry.strip() for entry in origins if entry.strip()]
        self.any = "*" in entries
        self.origins = frozenset(normalize_origin(entry) for entry in entries if entry != "*")
        self.paths = paths
        self.counters: Counter[str] = Counter()

    @classmethod
    def from_spec(cls, spec: str) -> Cors:
        """From ``"https://app.example.com,https://other.example:8443"`` (config ``cors_origins``), or
        ``"*"``; ``""`` grants none. Raises ValueError."""
        return cls(spec.split(","))

    def allows(self, origin: str) -> bool:
        """Whether a request with this ``Origin`` header value is granted."""
        if self.any:
            return True
        try:
            return normalize_origin(origin) in self.origins
        except ValueError:
            return False

    def grant(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add the CORS headers for ``request``'s origin to ``response`` (nothing for a request without
        ``Origin``, or outside ``paths``; no grant for an origin not on the list)."""
        origin = request.headers.get("Origin")
        if origin is None or not request.path.startswith(self.paths):
            return
        response.headers.add("Vary", "Origin")
        if not self.allows(origin):
            self.counters["cors_refused"] += 1
            return
        self.counters["cors_granted"] += 1
        response.headers["Access-Control-Allow-Origin"] = origin
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Headers"] = ", ".join(ALLOW_HEADERS)
            response.headers["Access-Control-Max-Age"] = str(MAX_AGE_S)
        else:
            response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSE_HEADERS)

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        """Grant CORS on every response under ``paths``, the errors of later middlewares included."""
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own 404 and 405 answers
            self.grant(request, exc)
            raise
        self.grant(request, response)
        return response

    @staticmethod
    def options(methods: tuple[str, ...], accept_post: bool = False, accept_patch: bool = False):
        """An OPTIONS handler for a URL that takes ``methods``: ``200`` with ``Allow``, the preflight's
        ``Access-Control-Allow-Methods``, and ``Accept-Post`` or ``Accept-Patch``."""
        allowed = ", ".join((*methods, "OPTIONS"))

        async def handler(_request: web.Request) -> web.StreamResponse:
            headers = {"Allow": allowed, "Access-Control-Allow-Methods": allowed}
            if accept_post:
                headers["Accept-Post"] = SDP_TYPE
            if accept_patch:
                headers["Accept-Patch"] = TRICKLE_TYPE
            return web.Response(status=200, headers=headers)

        return handler
