"""The edge's WHIP front (RFC 9725): takes a caller's offer and forwards it to a transceiver.

It picks a transceiver from the registry view: in the nearest core region with
capacity (or the region the request pins), the least loaded there, counting the offers it sent each
transceiver in the last LOAD_LAG_S that its record may not show yet (RecentForwards). It forwards the
offer with the edge's id, its public relay address and the caller's address, and returns the transceiver's answer
as ``201 Created`` with a ``Location`` on this edge and the ICE session's ``ETag``. It names the edge and the
core region serving the call (``Voicemesh-Edge``, ``Voicemesh-Region``). ``PATCH`` (trickle ICE
and ICE restart, RFC 9725 4.3) and ``DELETE`` on that URL find the owner through the session's claim in the
registry and are forwarded to it; GeoDNS may send a caller that moved to another edge, whose relay then
carries the restarted ICE. CORS grants come from an allow-list of origins (edge/cors.py).

OpenAI Realtime compatibility: ``POST /v1/realtime/calls`` is the same POST for apps written for OpenAI's
Realtime WebRTC API. It takes the offer as ``application/sdp``, or as ``multipart/form-data`` with a part
``sdp`` and a part ``session`` (a JSON object, the initial session configuration, which travels to the
agent), and answers as WHIP does, with ``Location: /v1/realtime/calls/<id>``; admission, authorization,
CORS and errors are WHIP's, and ``PATCH`` and ``DELETE`` on that URL act on the call as on a WHIP session.
``POST /v1/realtime/client_secrets`` is ``POST /v1/client_secrets`` under OpenAI's name, so an app's
backend changes only its base URL too.

Admission: a source (IPv4 address or IPv6 /64, edge/admission.py) over its
rate of offers gets ``429``, and so does one over its rate of other requests (``PATCH``, ``DELETE``,
``OPTIONS``: each can make the edge look a session up in every region's registry and forward to a transceiver);
a session's PATCHes are bounded too (ICE restarts, which mint a token and re-key the session, more tightly
than trickle); an id this mesh never issued (voicemesh/wire/sessionid.py) gets ``404`` without a look-up.
Over ``max_pending`` offers in flight the edge answers
``503``; a transceiver that answers ``503`` (full or draining) passes the offer
to the next in the choice order, and only when none takes it does the edge
answer ``503``. Every refusal carries ``Retry-After`` and is counted. A transceiver that cannot be
connected to within ``CONNECT_TIMEOUT_S`` (it crashed: its record stays in the view until its lease
expires) passes the offer on too, and is tried last for one lease TTL, so callers re-dialling after a
transceiver crash land on a live one at once.

Authorization (RFC 9725 4.5, RFC 6750), on when the edge has API keys: ``POST /v1/sessions`` takes as
bearer an API key (server-side callers) or a client token (browsers; voicemesh/wire/clienttoken.py),
which an app's backend gets with its API key from ``POST /v1/client_secrets``. A client token opens one
session: its nonce is remembered here until it expires. ``PATCH`` and ``DELETE`` take an API key or a
client token, also after it expired (the session URL's random id names the session). Every
request this edge makes to a transceiver is signed (voicemesh/wire/hopauth.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from importlib import resources

import aiohttp
from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from yarl import URL

from voicemesh.edge.admission import KeyedLimiter, PatchLimiter, retry_after_s, source_key
from voicemesh.edge.apikeys import ApiKeys
from voicemesh.edge.cors import Cors
from voicemesh.registry import InvalidName, MalformedRecord, NodeRecord, Registry, RegistryUnavailable
from voicemesh.runtime import telemetry
from voicemesh.runtime.http import (
    HTTP_COUNTERS,
    PROBLEM_TITLE,
    CallOffer,
    encode_call,
    problem,
    read_call,
    read_offer,
    read_sdpfrag,
)
from voicemesh.runtime.logs import LogThrottle
from voicemesh.runtime.tasks import spawn
from voicemesh.wire.clienttoken import MAX_TTL_S, BadClientToken, ClientTokenCodec, check_region, normalize_origin
from voicemesh.wire.geo import distance_km
from voicemesh.wire.hopauth import SIGNATURE, HopRequest, HopSigner
from voicemesh.wire.replay import ReplayCache, ReplayCacheFull
from voicemesh.wire.sessionid import SessionIds
from voicemesh.wire.signaling import (
    CLIENT_ADDRESS,
    EDGE_ID,
    MAX_CALL_BYTES,
    MAX_OFFER_BYTES,
    MAX_SDPFRAG_BYTES,
    RELAY_ADDRESS,
    RELAY_TCP_ADDRESS,
    SDP_TYPE,
    TRICKLE_TYPE,
)

log = logging.getLogger("voicemesh.whip")

FORWARD_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 1.0
"""Seconds to open a connection to a transceiver's API. A crashed host answers nothing: the offer moves on to
the next transceiver instead of waiting out FORWARD_TIMEOUT_S, and the host is tried last (after every other
transceiver) for one lease TTL, by when the registry has dropped it if it is dead."""
WARM_INTERVAL_S = 5.0
"""Seconds between an edge's ``HEAD /v1/status`` to every transceiver in its view, which opens a connection to
each and keeps it open: an offer then goes out on a connection already open, without a TCP handshake over the
backbone (a backbone round trip) before it."""
KEEPALIVE_S = 10.0
"""Seconds an edge keeps an idle connection to a transceiver open: over WARM_INTERVAL_S, and under the
transceivers' idle timeout (HttpLimits.idle_timeout_s, 15 s), so the edge never sends an offer on a connection
the transceiver is closing."""
RETRY_AFTER_S = 2
FORWARD_ATTEMPTS = 3
"""Transceivers an offer is tried on, in the choice order, before the edge answers 503."""
REGION_ATTEMPTS = 2
"""Transceivers of one region an offer is tried on at most, before it fails over to the next region."""
LOAD_LAG_S = 1.0
"""Seconds an offer this edge sent a transceiver counts towards that transceiver's load when the edge picks one:
the transceiver's registry record counts a session only once it is admitted, after a 0.2 s load update and
the watch that brings it to the edges, so a burst of offers would otherwise all go to whichever transceiver
was least loaded when it began."""
TOKEN_REPLAY_CAPACITY = 100_000
"""Client-token nonces an edge remembers at most (each for at most MAX_TTL_S): over it, offers with client
tokens get 503 until some expire (only API key holders can fill it)."""
MAX_SECRET_REQUEST_BYTES = 4096
LIMITED_METHODS = ("PATCH", "DELETE", "OPTIONS")
"""Methods rate-limited per source apart from offers (``request_limiter``), on any path."""
REFUSAL_LOG_INTERVAL_S = 10.0
"""Seconds between two log lines for refusals of one reason (the counters count every one)."""


SESSIONS_PATH = "/v1/sessions"
"""WHIP's endpoint (RFC 9725 4.2): sessions are at ``SESSIONS_PATH/<id>``."""
REALTIME_CALLS_PATH = "/v1/realtime/calls"
"""The OpenAI Realtime-compatible endpoint (OpenAI's ``POST /v1/realtime/calls``): calls are at
``REALTIME_CALLS_PATH/<id>``."""
OFFER_PATHS = (SESSIONS_PATH, REALTIME_CALLS_PATH)
"""Where offers are POSTed: both take the same admission, authorization and CORS (edge/cors.py's paths)."""
CLIENT_SECRETS_PATHS = ("/v1/client_secrets", "/v1/realtime/client_secrets")
"""Where an app's backend gets client tokens: ours, and OpenAI's name for its ephemeral keys."""

RegionPolicy = Callable[[web.Request], "str | None"]
"""Chooses a core region for one offer, or None to let the edge pick the nearest with capacity."""

PIN_HEADER = "Voicemesh-Region"
"""On a POST: the core region to pin the offer to. On its ``201``: the core region whose transceiver took it."""
EDGE_HEADER = "Voicemesh-Edge"
"""On a POST's ``201``: the node id of the edge that took the offer (and whose relay carries the call)."""
REGION_ATTRIBUTE = "voicemesh.region"
"""Span attribute of a WHIP POST: the core region whose transceiver took the offer."""
FAILOVER_ATTRIBUTE = "voicemesh.failover_from"
"""Span attribute of a WHIP POST that failed over: the region first in the choice order, which did not take it."""
CALL_PAGE = (resources.files("voicemesh.edge.static") / "call.html").read_bytes()
"""The page served at ``GET /`` (read once, so it always matches its CSP): a call through this edge with the
browser's own WebRTC stack."""


def page_policy(page: bytes) -> str:
    """The Content-Security-Policy for ``page`` (HTML whose script and style are inline): nothing may load or
    run but its own ``<script>`` and ``<style>`` elements, allowed by their SHA-256 (CSP3 "hash-source"), and
    ``fetch`` to this origin (WHIP) or any http(s) URL (the page's ``?token_url=``, an app's backend).
    No ``'unsafe-inline'``, no ``eval``, no frames, no forms, no ``<base>``."""
    def hashes(tag: bytes) -> str:
        bodies = re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", page, re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'" for body in bodies)

    return (f"default-src 'none'; script-src {hashes(b'script')}; style-src {hashes(b'style')}; "
            "connect-src 'self' http: https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


CALL_PAGE_HEADERS = {"Content-Security-Policy": page_policy(CALL_PAGE),
                     "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
"""Sent with the call page: its CSP (``page_policy``), no MIME sniffing, and no Referer (the page's URL may
carry ``?token=`` until it takes it out of the address bar)."""
REALTIME_PAGE = resources.files("voicemesh.edge.static") / "realtime.html"
"""The page served at ``GET /realtime``: an OpenAI Realtime WebRTC app (the flow of OpenAI's guide) whose base URL
is this edge."""


TOKEN_REGION = web.RequestKey("voicemesh_token_region", str)
"""The region a client token bound its offer to ("" for none), set by the authorization middleware."""

_TOKEN_REFUSALS = {
    "expired": "the client token has expired; get a new one from the app's backend",
    "origin": "the client token is bound to another origin than this request's Origin",
    "region": "the client token is bound to another region than the one this request pins",
}


def _bearer(request: web.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def pin_from_request(request: web.Request) -> str | None:
    """The default region policy: the ``region`` query parameter or the ``Voicemesh-Region`` header."""
    return request.query.get("region") or request.headers.get(PIN_HEADER) or None


def pick_transceivers(nodes: list[NodeRecord], edge: NodeRecord, region: str | None = None,
                      region_rtt_ms: Mapping[str, float] | None = None,
                      recent: Mapping[str, int] | None = None) -> list[NodeRecord]:
    """Transceivers to try, best first.

    Only those not draining and below capacity; only ``region`` if given.
    Nearest region first: by the backbone round trip (ms) from this edge's site to the region in
    ``region_rtt_ms`` (the topology's ``rtt_ms``; regions it lacks come after those it has), then by
    great-circle distance from ``edge`` to the transceiver's coordinates; then least loaded
    ((sessions + ``recent[node_id]``, the offers this edge sent it that its record may not count yet:
    RecentForwards) / capacity), then node id.
    """
    rtts, sent = region_rtt_ms or {}, recent or {}
    usable = [n for n in nodes if not n.draining and n.load < n.capacity and n.http
              and (region is None or n.region == region)]
    return sorted(usable, key=lambda n: (rtts.get(n.region, math.inf),
                                         round(distance_km(edge.lat, edge.lon, n.lat, n.lon)),
                                         (n.load + sent.get(n.node_id, 0)) / n.capacity, n.node_id))


class RecentForwards:
    """The offers this edge sent each transceiver in the last ``window_s`` seconds (LOAD_LAG_S), which its
    registry record may not count yet; pick_transceivers adds them to its load. Sans-IO: the caller passes the
    time (s, monotonic). Holds one float per offer for ``window_s``."""

    def __init__(self, window_s: float = LOAD_LAG_S) -> None:
        self.window_s = window_s
        self._sent: dict[str, deque[float]] = {}

    def add(self, node_id: str, now: float) -> None:
        """An offer sent to ``node_id`` at ``now``."""
        self._sent.setdefault(node_id, deque()).append(now)

    def counts(self, now: float) -> dict[str, int]:
        """Offers per node id sent in the ``window_s`` before ``now``; older ones are forgotten."""
        cutoff = now - self.window_s
        for node_id, times in list(self._sent.items()):
            while times and times[0] <= cutoff:
                times.popleft()
            if not times:
                del self._sent[node_id]
        return {node_id: len(times) for node_id, times in self._sent.items()}


def forward_order(candidates: list[NodeRecord], attempts: int = FORWARD_ATTEMPTS,
                  per_region: int = REGION_ATTEMPTS) -> list[NodeRecord]:
    """The transceivers an offer is tried on, from pick_transceivers' order: at most ``per_region`` of each
    region, at most ``attempts`` in all, so that a region that is down (its transceivers cannot claim a
    session) leaves attempts for the next region."""
    taken: Counter[str] = Counter()
    order: list[NodeRecord] = []
    for node in candidates:
        if taken[node.region] < per_region and len(order) < attempts:
            taken[node.region] += 1
            order.append(node)
    return order


def client_address(request: web.Request) -> str:
    """The caller's IP: the peer, or for a TLS front on the same host (peer on loopback) the
    last ``X-Forwarded-For`` entry it appended."""
    peer = request.remote or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and peer in ("127.0.0.1", "::1"):
        return forwarded.rsplit(",", 1)[-1].strip()
    return peer


class WhipFront:
    """The WHIP HTTP application of one edge.

    ``edge`` is this edge's registered record (``index`` is the edge id in
    backbone frames, ``public_relay`` the relay's public address);
    ``relay_stats`` returns the relay's counters for ``GET /v1/status``.
    ``on_answer(answer_sdp, session_id, span_context)`` is told of each
    session created, so the relay's first packet can join the trace.
    ``hop`` signs the requests to transceivers. ``cors`` grants pages on other
    origins (none: no origin is granted). ``session_ids`` recognises this
    mesh's session ids (none: no id is, and a DELETE of an ended session gets 404). ``api_keys`` (none or empty:
    WHIP is open) turn authorization on (see the module docstring);
    ``client_tokens`` issues and checks client tokens; ``wall_clock`` gives
    unix seconds for token expiry and signatures.
    ``region_rtt_ms`` maps core region to the backbone round trip (ms) from this edge's site, the order in
    which regions are tried (region failover: counted as ``region_failover``, logged, and set on the span).
    ``limiter`` rate-limits offers per source (none: no limit), before
    authorization; ``request_limiter`` rate-limits PATCH, DELETE and OPTIONS per source (none: no limit),
    before authorization; ``patch_limiter`` bounds each session's PATCHes (none: no bound), after it (so
    only a bearer holder can spend a session's allowance); ``max_pending`` caps offers in flight. Every
    refusal is logged, at most one line per reason every REFUSAL_LOG_INTERVAL_S (with the number left
    unwritten), and counted on the ``voicemesh.whip.refused`` metric by reason. ``counters`` counts
    refusals by reason: ``rate_limited`` (429), ``request_rate_limited`` (429 to a PATCH, DELETE or OPTIONS),
    ``patch_rate_limited`` and ``ice_restart_rate_limited`` (429 to one session's PATCH), ``unknown_session_id``
    (404 to a PATCH or DELETE of an id this mesh never issued), ``pending_full`` and
    ``no_capacity`` (503), ``transceiver_refused`` (a transceiver's 503,
    passed on to the next), ``transceiver_unreachable`` (no connection within CONNECT_TIMEOUT_S, passed on
    too), ``unauthorized_<reason>`` (401, the reason as
    ``BadClientToken``'s, or ``missing``, ``replayed``), and issued client
    tokens as ``client_tokens_issued``, ICE restarts answered as ``ice_restarts``, DELETEs of ended
    sessions as ``deleted_after_end``; a Realtime call whose body is refused counts as ``call_<problem
    title>`` (``call_malformed_multipart``, ``call_malformed_session``, ...); ``GET /v1/status`` adds the CORS
    counters (edge/cors.py).
    """

    def __init__(self, registry: Registry, edge: Callable[[], NodeRecord], relay_stats: Callable[[], dict],
                 region_policy: RegionPolicy = pin_from_request,
                 *, hop: HopSigner, client_tokens: ClientTokenCodec,
                 on_answer: Callable[[bytes, str, SpanContext], None] | None = None, api_keys: ApiKeys | None = None,
                 cors: Cors | None = None, session_ids: SessionIds | None = None,
                 limiter: KeyedLimiter | None = None, request_limiter: KeyedLimiter | None = None,
                 patch_limiter: PatchLimiter | None = None, max_pending: int = 256,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 region_rtt_ms: Mapping[str, float] | None = None) -> None:
        self.registry = registry
        self.region_rtt_ms = dict(region_rtt_ms or {})
        self.hop = hop
        self.api_keys = api_keys or ApiKeys({})
        self.cors = cors or Cors(())
        self.session_ids = session_ids
        self.client_tokens = client_tokens
        self.used_tokens = ReplayCache(TOKEN_REPLAY_CAPACITY)
        self.wall_clock = wall_clock
        self.region_policy = region_policy
        self.on_answer = on_answer
        self.edge = edge
        self.relay_stats = relay_stats
        self.limiter = limiter
        self.request_limiter = request_limiter
        self.patch_limiter = patch_limiter
        self.max_pending = max_pending
        self.clock = clock
        self.pending = 0
        self.counters: Counter[str] = Counter()
        self._unreachable: dict[str, float] = {}  # node id -> until when (self.clock) it is tried last
        self._recent = RecentForwards()
        self._refusal_log = LogThrottle(REFUSAL_LOG_INTERVAL_S)
        self._refusals = telemetry.meter().create_counter(
            "voicemesh.whip.refused", unit="{request}", description="WHIP requests refused at the edge, by reason")
        self._http: aiohttp.ClientSession | None = None
        self._warming: asyncio.Task | None = None

    async def close(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.gather(self._warming, return_exceptions=True)
            self._warming = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _start_warming(self, _app: web.Application) -> None:
        if self._warming is None:
            self._warming = spawn(self._keep_warm(), "warm transceiver connections")

    async def _keep_warm(self) -> None:
        while True:
            await self.warm()
            await asyncio.sleep(WARM_INTERVAL_S)

    async def warm(self) -> None:
        """``HEAD /v1/status`` on every transceiver in the view (all regions: an offer may be pinned to, or fail
        over to, any), on the pooled connections offers use: each has an open connection for the next
        KEEPALIVE_S. The app runs this every WARM_INTERVAL_S from its start. A transceiver that does not answer
        is left to the offers' own handling (CONNECT_TIMEOUT_S)."""
        nodes = {n.http: n.node_id for n in self.registry.nodes("transceiver") if n.http}
        await asyncio.gather(*(self._warm(url, node_id) for url, node_id in nodes.items()))

    async def _warm(self, url: str, node_id: str) -> None:
        """One warming request. A transceiver that cannot be connected to, or does not answer within
        WARM_INTERVAL_S (a crashed host leaves an open connection silent), is tried last for one lease TTL,
        as after an offer it did not take (the offers' ``transceiver_unreachable``, not counted here)."""
        timeout = aiohttp.ClientTimeout(total=WARM_INTERVAL_S, sock_connect=CONNECT_TIMEOUT_S)
        try:
            async with self._client().head(f"{url}/v1/status", timeout=timeout) as resp:
                await resp.read()
        except (aiohttp.ClientConnectorError, TimeoutError) as exc:
            self._unreachable[node_id] = self.clock() + self.registry.lease_ttl_s
            log.warning("transceiver %s did not answer the edge's warming request, tried last for %.0f s: %r",
                        node_id, self.registry.lease_ttl_s, exc)
        except aiohttp.ClientError as exc:
            log.debug("warming %s failed: %r", url, exc)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_CALL_BYTES,
                              middlewares=[telemetry.server_spans(), self.cors.middleware, self._admit,
                                           self._authorize])
        for path in CLIENT_SECRETS_PATHS:
            app.router.add_post(path, self.post_client_secret)
        for path, post in ((SESSIONS_PATH, self.post_session), (REALTIME_CALLS_PATH, self.post_call)):
            app.router.add_post(path, post)
            app.router.add_patch(path + "/{session_id}", self.patch_session)
            app.router.add_delete(path + "/{session_id}", self.delete_session)
            app.router.add_route("OPTIONS", path, Cors.options(("POST",), accept_post=True))
            app.router.add_route("OPTIONS", path + "/{session_id}", Cors.options(("PATCH", "DELETE"),
                                                                                 accept_patch=True))
        app.router.add_get("/v1/status", self.status)
        app.router.add_get("/", self.call_page)
        app.router.add_get("/realtime", self.realtime_page)
        app.on_startup.append(self._start_warming)
        return app

    def _refuse(self, status: int, reason: str, detail: str, retry_after: int, *, title: str = "",
                context: dict[str, str] | None = None) -> web.Response:
        """The problem for a refusal (title ``title``, by default ``reason`` with dashes), with ``Retry-After``;
        counted by ``reason``, and logged with ``context`` unless REFUSAL_LOG_INTERVAL_S has not passed since
        the last line for ``reason``."""
        self.counters[reason] += 1
        self._refusals.add(1, {"voicemesh.reason": reason})
        unwritten = self._refusal_log.allow(reason, self.clock())
        if unwritten is not None:
            log.warning("whip request refused: %s", reason, extra={"reason": reason, "status": status,
                                                                   "unwritten_since_last": unwritten, **(context or {})})
        return problem(status, title or reason.replace("_", "-"), detail, headers={"Retry-After": str(retry_after)})

    @web.middleware
    async def _admit(self, request: web.Request, handler):
        """Offers: the source's rate limit (429), then the cap on offers in flight (503). PATCH, DELETE and
        OPTIONS: the source's rate limit for them (429)."""
        if request.method in LIMITED_METHODS and self.request_limiter is not None:
            source = source_key(client_address(request))
            wait_s = self.request_limiter.take(source, self.clock())
            if wait_s > 0:
                return self._refuse(429, "request_rate_limited", f"too many {', '.join(LIMITED_METHODS)} requests "
                                    "from this address; retry later", retry_after_s(wait_s), title="rate-limited",
                                    context={"source": source, "method": request.method})
        if request.method != "POST" or request.path not in OFFER_PATHS:
            return await handler(request)
        if self.limiter is not None:
            source = source_key(client_address(request))
            wait_s = self.limiter.take(source, self.clock())
            if wait_s > 0:
                return self._refuse(429, "rate_limited", "too many offers from this address; retry later",
                                    retry_after_s(wait_s), context={"source": source, "method": "POST"})
        if self.pending >= self.max_pending:
            return self._refuse(503, "pending_full", "this edge has too many offers in flight; retry later",
                                RETRY_AFTER_S)
        self.pending += 1
        try:
            return await handler(request)
        finally:
            self.pending -= 1

    def _unauthorized(self, reason: str, detail: str) -> web.Response:
        self.counters[f"unauthorized_{reason}"] += 1
        return problem(401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="voicemesh"'})

    @web.middleware
    async def _authorize(self, request: web.Request, handler):
        """WHIP POST, PATCH and DELETE need a bearer (an API key, or a client token) when the edge has API keys.

        A client token's region, if any, pins the offer (``request[TOKEN_REGION]``)."""
        if not self.api_keys or request.path in CLIENT_SECRETS_PATHS or request.method not in ("POST", "PATCH", "DELETE"):
            return await handler(request)
        bearer = _bearer(request)
        if not bearer:
            return self._unauthorized("missing", "this WHIP endpoint needs Authorization: Bearer <API key or client"
                                                 " token>")
        if self.api_keys.match(bearer) is not None:
            return await handler(request)
        posting = request.method == "POST"
        try:
            token = self.client_tokens.verify(bearer, now=self.wall_clock() if posting else None,
                                              origin=request.headers.get("Origin"),
                                              region=self.region_policy(request) if posting else None)
        except BadClientToken as exc:
            return self._unauthorized(exc.reason, _TOKEN_REFUSALS.get(exc.reason, "the bearer is not an API key"
                                                                      " or a client token of this mesh"))
        if posting:
            try:
                fresh = self.used_tokens.remember(token.nonce, token.expires_at, self.wall_clock())
            except ReplayCacheFull:
                return self._refuse(503, "token_memory_full", "this edge cannot take more client tokens right now;"
                                                              " retry later", RETRY_AFTER_S)
            if not fresh:
                return self._unauthorized("replayed", "this client token opened a session already; a client token"
                                                      " is good for one session")
            request[TOKEN_REGION] = token.region
        return await handler(request)

    async def post_client_secret(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/client_secrets``: an app's backend exchanges its API key for a client token.

        Bearer: an API key (else ``401``). JSON body (may be empty): ``ttl_s`` (1..60, default 60),
        ``origin`` (the page's origin, ``https://host[:port]``) and ``region`` (a core region) to bind it
        to; other keys (OpenAI's ``session``, ``expires_after``) are ignored. Answers ``200`` with
        ``{"value": token, "expires_at": unix seconds}`` (the fields of OpenAI's answer an app reads); ``400``
        for a bad body. Also at ``POST /v1/realtime/client_secrets``.
        """
        key_id = self.api_keys.match(_bearer(request))
        if key_id is None:
            return self._unauthorized("api_key", "POST /v1/client_secrets needs Authorization: Bearer <API key>")
        raw = await request.content.read(MAX_SECRET_REQUEST_BYTES + 1)
        try:
            body = json.loads(raw or b"{}") if len(raw) <= MAX_SECRET_REQUEST_BYTES else None
            if not isinstance(body, dict):
                raise ValueError(f"the body must be a JSON object of at most {MAX_SECRET_REQUEST_BYTES} bytes")
            ttl_s = body.get("ttl_s", MAX_TTL_S)
            origin, region = body.get("origin") or "", body.get("region") or ""
            if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or not 1 <= ttl_s <= MAX_TTL_S:
                raise ValueError(f"ttl_s must be an integer in 1..{MAX_TTL_S}")
            if not isinstance(origin, str) or not isinstance(region, str):
                raise ValueError("origin and region must be strings")
            origin = normalize_origin(origin) if origin else ""
            region = check_region(region) if region else ""
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            detail = str(exc) if not isinstance(exc, json.JSONDecodeError | UnicodeDecodeError) else "not JSON"
            return problem(400, "bad-client-secret-request", detail)
        value, expires_at = self.client_tokens.issue(now=self.wall_clock(), ttl_s=ttl_s, nonce=secrets.token_bytes(16),
                                                     origin=origin, region=region)
        self.counters["client_tokens_issued"] += 1
        log.info("client token issued", extra={"api_key_id": key_id, "ttl_s": ttl_s, "origin": origin,
                                               "region": region})
        return web.json_response({"value": value, "expires_at": expires_at})

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            opened = aiohttp.TraceConfig()

            async def connection_opened(_session: aiohttp.ClientSession, context, _params) -> None:
                if isinstance(context.trace_request_ctx, dict):
                    context.trace_request_ctx["new_connection"] = True

            opened.on_connection_create_end.append(connection_opened)
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S,
                                                                              sock_connect=CONNECT_TIMEOUT_S),
                                               connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_S),
                                               trace_configs=[opened])
        return self._http

    async def post_session(self, request: web.Request) -> web.StreamResponse:
        """WHIP POST (RFC 9725 4.2): offer in, ``201`` + answer + ``Location`` out."""
        offer = await read_offer(request, MAX_OFFER_BYTES)
        if isinstance(offer, web.Response):
            return offer
        return await self._offer(request, CallOffer(offer), SESSIONS_PATH)

    async def post_call(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/realtime/calls`` (OpenAI's Realtime WebRTC call): the offer as ``application/sdp``, or as
        ``multipart/form-data`` with ``sdp`` and ``session`` (voicemesh/runtime/http.py read_call); then as
        WHIP POST, with ``Location: /v1/realtime/calls/<id>``."""
        offer = await read_call(request)
        if isinstance(offer, web.Response):
            self.counters["call_" + offer[PROBLEM_TITLE].replace("-", "_")] += 1
            return offer
        return await self._offer(request, offer, REALTIME_CALLS_PATH)

    async def _offer(self, request: web.Request, offer: CallOffer, collection: str) -> web.StreamResponse:
        """Forward ``offer`` to a transceiver (see the class docstring); the answer's ``Location`` is under
        ``collection`` (the path the offer was POSTed to).

        The "session forwarded" log line times the answer's parts: ``whip_ms`` from here (the offer read) to
        the answer, ``forward_ms`` the request to the transceiver that answered (its work and the backbone),
        ``new_connection`` whether that request had to open a connection first."""
        started = time.perf_counter()
        edge = self.edge()
        if edge.draining:
            return problem(503, "draining", "this edge is draining; resolve the mesh name again",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        sdp, content_type = encode_call(offer)
        headers = {
            "Content-Type": content_type,
            EDGE_ID: str(edge.index),
            RELAY_ADDRESS: edge.public_relay,
            CLIENT_ADDRESS: client_address(request),
        }
        if edge.public_relay_tcp:
            headers[RELAY_TCP_ADDRESS] = edge.public_relay_tcp
        region = request.get(TOKEN_REGION) or self.region_policy(request)
        now = self.clock()
        self._unreachable = {node_id: until for node_id, until in self._unreachable.items() if until > now}
        candidates = pick_transceivers(self.registry.nodes("transceiver"), edge, region, self.region_rtt_ms,
                                       self._recent.counts(now))
        order = forward_order(sorted(candidates, key=lambda n: n.node_id in self._unreachable))
        first_region = order[0].region if order else ""
        for node in order:
            url = f"{node.http}/v1/sessions"
            signature = self._sign("POST", url, node.node_id, sdp, headers)
            hop: dict[str, object] = {"new_connection": False}
            self._recent.add(node.node_id, now)
            sent = time.perf_counter()
            with telemetry.tracer().start_as_current_span("POST", kind=SpanKind.CLIENT, attributes={
                    "http.request.method": "POST", "url.full": url, telemetry.NODE_ID: node.node_id}) as span:
                try:
                    async with self._client().post(url, data=sdp, headers=headers | signature | telemetry.inject(),
                                                   trace_request_ctx=hop) as resp:
                        span.set_attribute("http.response.status_code", resp.status)
                        body = await resp.read()
                        if resp.status == 503:
                            self.counters["transceiver_refused"] += 1
                            continue
                        if resp.status == 401:
                            self.counters["transceiver_unauthorized"] += 1
                            log.error("transceiver %s refused this edge's signature (mesh keys or clocks differ): %s",
                                      node.node_id, body[:300].decode(errors="replace"))
                            continue
                        if resp.status != 201:
                            return web.Response(status=resp.status, body=body, content_type=resp.content_type)
                        session_id = resp.headers["Location"].rsplit("/", 1)[-1]
                        etag = resp.headers.get("ETag")
                        answered = time.perf_counter()
                except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                    span.set_status(StatusCode.ERROR, repr(exc))
                    self.counters["transceiver_unreachable"] += 1
                    self._unreachable[node.node_id] = self.clock() + self.registry.lease_ttl_s
                    log.warning("transceiver %s unreachable, tried last for %.0f s: %r", node.node_id,
                                self.registry.lease_ttl_s, exc)
                    continue
                except (aiohttp.ClientError, TimeoutError, KeyError) as exc:
                    span.set_status(StatusCode.ERROR, repr(exc))
                    log.warning("transceiver %s failed: %r", node.node_id, exc)
                    continue
            server_span = trace.get_current_span()
            server_span.set_attribute(telemetry.SESSION_ID, session_id)
            server_span.set_attribute(REGION_ATTRIBUTE, node.region)
            if node.region != first_region:
                self.counters["region_failover"] += 1
                server_span.set_attribute(FAILOVER_ATTRIBUTE, first_region)
                log.warning("region failover: %s did not take the offer, %s did", first_region, node.region,
                            extra={"session_id": session_id, "from_region": first_region, "to_region": node.region})
            if self.on_answer is not None:
                self.on_answer(body, session_id, server_span.get_span_context())
            log.info("session forwarded", extra={"session_id": session_id, "transceiver": node.node_id,
                                                 "trace_id": telemetry.trace_id(server_span),
                                                 "whip_ms": round((time.perf_counter() - started) * 1000, 1),
                                                 "forward_ms": round((answered - sent) * 1000, 1), **hop})
            headers = {"Location": f"{collection}/{session_id}", EDGE_HEADER: edge.node_id,
                       PIN_HEADER: node.region} | ({"ETag": etag} if etag else {})
            return web.Response(status=201, body=body, content_type=SDP_TYPE, headers=headers)
        where = f"in region {region}" if region else "in any region"
        return self._refuse(503, "no_capacity", f"no transceiver {where} has capacity for a new session; retry later",
                            RETRY_AFTER_S)

    async def _owner(self, session_id: str) -> NodeRecord | web.Response:
        """The transceiver that owns ``session_id`` (its claim in the registry), or the problem to answer:
        404 if no live session has this id, 503 if the registry cannot say."""
        try:
            owner = await self.registry.session_owner(session_id)
        except (InvalidName, MalformedRecord):
            owner = None
        except RegistryUnavailable:
            return problem(503, "registry-unavailable", "session ownership cannot be looked up right now",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        node = next((n for n in self.registry.nodes("transceiver") if n.node_id == owner), None)
        if node is None:
            return problem(404, "no-such-session", "no live session has this id")
        return node

    def _unknown(self, session_id: str) -> web.Response | None:
        """``404`` for an id this mesh never issued (voicemesh/wire/sessionid.py; a made-up or guessed id),
        before any registry look-up; None for one it did, or when this edge has no ``session_ids``."""
        if self.session_ids is None or self.session_ids.issued(session_id):
            return None
        self.counters["unknown_session_id"] += 1
        return problem(404, "no-such-session", "no live session has this id")

    async def _forward(self, method: str, session_id: str, body: bytes = b"",
                       headers: dict[str, str] | None = None) -> web.Response:
        """Send a signed ``method`` on ``/v1/sessions/<session_id>`` to the transceiver that owns the session,
        and answer with its status, body, content type and ``ETag``; 502 if it does not answer.

        The URL carries a random ``hop`` query parameter, which the signature covers: a caller may send the
        same request twice within a second (a retried PATCH, a second DELETE), and the transceiver's replay
        memory (voicemesh/wire/hopauth.py) must refuse only a replayed signature, not a repeated request."""
        node = await self._owner(session_id)
        if isinstance(node, web.Response):
            return node
        url = f"{node.http}/v1/sessions/{session_id}?hop={secrets.token_hex(8)}"
        headers = headers or {}
        signed = headers | self._sign(method, url, node.node_id, body, headers) | telemetry.inject()
        try:
            async with self._client().request(method, url, data=body, headers=signed) as resp:
                etag = resp.headers.get("ETag")
                return web.Response(status=resp.status, body=await resp.read(),
                                    content_type=resp.content_type if resp.status != 204 else None,
                                    headers={"ETag": etag} if etag else None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return problem(502, "transceiver-unreachable", f"the owning transceiver did not answer: {exc!r}")

    async def patch_session(self, request: web.Request) -> web.StreamResponse:
        """WHIP PATCH (RFC 9725 4.3): trickle ICE or an ICE restart, forwarded with this edge's hop headers, so
        the restarted ICE runs through this edge's relay (the answer's candidate). ``If-Match`` goes along:
        the transceiver owns the ICE session's ETag.

        An id this mesh never issued gets ``404`` at once; a session over its PATCH allowance at this edge
        (``patch_limiter``: ``If-Match: *`` asks for an ICE restart) gets ``429`` with ``Retry-After``."""
        session_id = request.match_info["session_id"]
        unknown = self._unknown(session_id)
        if unknown is not None:
            return unknown
        if self.patch_limiter is not None:
            restart = request.headers.get("If-Match", "").strip() == "*"
            wait_s = self.patch_limiter.take(session_id, restart, self.clock())
            if wait_s > 0:
                what = "ICE restarts" if restart else "PATCH requests"
                return self._refuse(429, "ice_restart_rate_limited" if restart else "patch_rate_limited",
                                    f"too many {what} for this session; retry later", retry_after_s(wait_s),
                                    context={"session_id": session_id,
                                             "source": source_key(client_address(request))})
        frag = await read_sdpfrag(request, MAX_SDPFRAG_BYTES)
        if isinstance(frag, web.Response):
            return frag
        edge = self.edge()
        headers = {"Content-Type": TRICKLE_TYPE, EDGE_ID: str(edge.index), RELAY_ADDRESS: edge.public_relay,
                   CLIENT_ADDRESS: client_address(request)}
        if edge.public_relay_tcp:
            headers[RELAY_TCP_ADDRESS] = edge.public_relay_tcp
        if "If-Match" in request.headers:
            headers["If-Match"] = request.headers["If-Match"]
        response = await self._forward("PATCH", session_id, frag.encode(), headers)
        if response.status == 200 and self.on_answer is not None and isinstance(response.body, bytes):
            self.on_answer(response.body, session_id, trace.get_current_span().get_span_context())
        if response.status == 200:
            self.counters["ice_restarts"] += 1
            log.info("ice restart forwarded", extra={"session_id": session_id})
        return response

    async def delete_session(self, request: web.Request) -> web.StreamResponse:
        """WHIP DELETE (RFC 9725 4.2): end the session on the transceiver that owns it, ``200``.

        A session of this mesh that has ended already (its caller closed the peer connection first, ICE
        failed, the agent hung up) gets ``200`` as well: the DELETE asks for the session to be over and
        its resources freed, which holds, and DELETE is idempotent (RFC 9110 9.2.2). An id this mesh never
        issued (voicemesh/wire/sessionid.py) gets ``404``, without a registry look-up."""
        session_id = request.match_info["session_id"]
        unknown = self._unknown(session_id)
        if unknown is not None:
            return unknown
        response = await self._forward("DELETE", session_id)
        if response.status == 404 and self.session_ids is not None:  # issued: _unknown let it through
            self.counters["deleted_after_end"] += 1
            return web.Response(status=200)
        return response

    def _sign(self, method: str, url: str, transceiver: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        """The signature header for a request to a transceiver (voicemesh/wire/hopauth.py)."""
        request = HopRequest.from_headers(method, URL(url).raw_path_qs, transceiver, body, headers)
        return {SIGNATURE: self.hop.sign(request, self.wall_clock())}

    async def call_page(self, _request: web.Request) -> web.StreamResponse:
        """``GET /``: the call page (edge/static/call.html), with CALL_PAGE_HEADERS; it POSTs its offer to this edge."""
        return web.Response(body=CALL_PAGE, content_type="text/html", headers=CALL_PAGE_HEADERS)

    async def realtime_page(self, _request: web.Request) -> web.StreamResponse:
        """``GET /realtime``: the Realtime example page (edge/static/realtime.html); it POSTs to this edge's
        ``/v1/realtime/calls``."""
        return web.Response(body=REALTIME_PAGE.read_bytes(), content_type="text/html")

    async def status(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/status``: the relay's counters, ``whip`` refusals, ``http`` connection counters and
        ``tasks``, the asyncio tasks of the process (a leak shows as a count that only grows)."""
        edge = self.edge()
        return web.json_response({"edge": edge.node_id, "relay": edge.public_relay, **self.relay_stats(),
                                  "whip": {"pending": self.pending, **self.counters, **self.cors.counters},
                                  "http": dict(request.app.get(HTTP_COUNTERS, {})),
                                  "tasks": len(asyncio.all_tasks())})

