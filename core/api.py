"""The transceiver's HTTP API, reached by edges over the backbone (not by callers).

``POST /v1/sessions`` takes the caller's WHIP offer as forwarded by an edge (the SDP, or with the caller's
Realtime session configuration ``{"sdp", "session"}`` as JSON: voicemesh/runtime/http.py encode_call),
with the edge's identity in headers, and returns ``201`` with the answer,
``Location`` and ``ETag``; ``PATCH /v1/sessions/{id}`` takes trickle ICE and ICE
restarts (RFC 9725 4.3); ``DELETE /v1/sessions/{id}`` ends a session; ``GET /v1/status``
reports sessions, the mux's counters (``mux``: drops by reason, ``rx``, ``tx``), its route
events (``mux_routes``), its live routes by the caller's transport (``routes_by_transport``: udp, tcp),
the media path (``media_path``) and its counters (``media``: core/lean.py), and the asyncio tasks and
threads of the process (``tasks``, ``threads``). Errors are RFC 9457 problem details. An offer from an
edge that serves ICE-TCP carries its TCP address (``Voicemesh-Relay-Tcp-Address``); the answer then has a
passive TCP candidate after the UDP one (core/offer.py add_tcp_candidate).

POST, PATCH and DELETE must carry an edge's hop signature (voicemesh/wire/hopauth.py): an unsigned, wrongly
signed, stale or replayed one gets ``401`` and is counted by reason in the status's ``hop_refused``. The
status stays open to the backbone: it is read-only and tells no caller's data, only counts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from aiohttp import web

from voicemesh.core.offer import OfferRejected, parse_sdpfrag
from voicemesh.core.transceiver import Capacity, EdgeHop, RestartRefused, Transceiver
from voicemesh.runtime import telemetry
from voicemesh.runtime.http import HttpLimits, if_match, problem, read_forwarded_call, read_sdpfrag, serve_app
from voicemesh.wire.addr import parse_hostport
from voicemesh.wire.hopauth import SIGNATURE, BadSignature, HopRequest, HopVerifier
from voicemesh.wire.signaling import (
    CLIENT_ADDRESS,
    EDGE_ID,
    MAX_FORWARDED_CALL_BYTES,
    MAX_SDPFRAG_BYTES,
    RELAY_ADDRESS,
    RELAY_TCP_ADDRESS,
    SDP_TYPE,
    TRICKLE_TYPE,
)

log = logging.getLogger("voicemesh.api")


def create_app(transceiver: Transceiver, hop: HopVerifier, clock: Callable[[], float] = time.time) -> web.Application:
    """An aiohttp application serving ``transceiver``; ``hop`` checks edges' signatures at ``clock()`` (unix s)."""
    refused: Counter[str] = Counter()

    def unsigned(request: web.Request, body: bytes) -> web.Response | None:
        """None if the request carries a valid hop signature, else the 401 (503 if the replay memory is full)."""
        hop_request = HopRequest.from_headers(request.method, request.raw_path, transceiver.config.node_id, body,
                                              request.headers)
        try:
            hop.verify(request.headers.get(SIGNATURE), hop_request, clock())
            return None
        except BadSignature as exc:
            refused[exc.reason] += 1
            log.warning("request refused: bad hop signature", extra={"reason": exc.reason, "peer": request.remote,
                                                                     "path": request.path})
            if exc.reason == "busy":
                return problem(503, "hop-busy", "too many signed requests at once; retry later",
                               headers={"Retry-After": "1"})
            return problem(401, "bad-hop-signature", f"this API takes requests signed by an edge ({SIGNATURE});"
                                                     f" this one is {exc.reason.replace('_', ' ')}")

    def edge_hop(request: web.Request) -> EdgeHop | web.Response:
        """The forwarding edge named by the hop headers, or a 400."""
        try:
            return EdgeHop(
                edge_id=int(request.headers[EDGE_ID]),
                relay=parse_hostport(request.headers[RELAY_ADDRESS]),
                client_ip=request.headers.get(CLIENT_ADDRESS, ""),
                relay_tcp=parse_hostport(request.headers[RELAY_TCP_ADDRESS]) if RELAY_TCP_ADDRESS in request.headers
                else None,
            )
        except (KeyError, ValueError):
            return problem(400, "missing-edge-headers",
                           f"offers reach a transceiver through an edge, with {EDGE_ID} and {RELAY_ADDRESS}")

    async def post_session(request: web.Request) -> web.StreamResponse:
        call = await read_forwarded_call(request)
        if isinstance(call, web.Response):
            return call
        offer, body = call
        refusal = unsigned(request, body)
        if refusal is not None:
            return refusal
        edge = edge_hop(request)
        if isinstance(edge, web.Response):
            return edge
        try:
            session = await transceiver.create_session(offer.sdp, edge, session_config=offer.session)
        except OfferRejected as exc:
            return problem(400, exc.title, exc.detail)
        except Capacity as exc:
            title, detail = (("draining", "this transceiver is draining") if exc.reason == "draining"
                             else ("no-capacity", "this transceiver is at capacity"))
            return problem(503, title, detail, headers={"Retry-After": str(exc.retry_after_s)})
        return web.Response(
            status=201,
            text=session.answer,
            content_type=SDP_TYPE,
            headers={"Location": f"/v1/sessions/{session.id}", "ETag": session.etag},
        )

    async def patch_session(request: web.Request) -> web.StreamResponse:
        """RFC 9725 4.3: trickle ICE (``204``; the caller's candidates are not needed, its address comes
        from its first check through the relay) or an ICE restart (``200`` with the answer fragment and the
        new ``ETag``). ``If-Match`` is required (``428``) and must match the ICE generation (``412``); a
        restart carries ``If-Match: *``. The same request again (a lost answer) gets the same answer."""
        frag = await read_sdpfrag(request, MAX_SDPFRAG_BYTES)
        if isinstance(frag, web.Response):
            return frag
        refusal = unsigned(request, frag.encode())
        if refusal is not None:
            return refusal
        edge = edge_hop(request)
        if isinstance(edge, web.Response):
            return edge
        session = transceiver.sessions.get(request.match_info["session_id"])
        if session is None:
            return problem(404, "no-such-session", "no session with this id is live on this transceiver")
        condition = request.headers.get("If-Match")
        matched = if_match(condition, session.etag)
        if matched is None:
            return problem(428, "if-match-required", "a PATCH needs If-Match: the ETag of the ICE session, or *"
                                                     " for an ICE restart (RFC 9725 4.3.1)")
        if not matched:
            return problem(412, "ice-session-changed", "If-Match does not name the current ICE session: it was"
                                                       " restarted", headers={"ETag": session.etag})
        try:
            parsed = parse_sdpfrag(frag)
        except OfferRejected as exc:
            return problem(400, exc.title, exc.detail)
        restart = condition is not None and condition.strip() == "*"
        try:
            if (parsed.ufrag, parsed.pwd) == (session.remote_ufrag, session.remote_pwd):
                if not restart or parsed.mids:
                    return web.Response(status=204, headers={"ETag": session.etag})
                answer = transceiver.ice_answer(session)  # a restart asked again: the same answer
            elif not restart:
                return problem(422, "ice-credentials-mismatch", "the fragment's ice-ufrag and ice-pwd are not this"
                                                                " ICE session's; an ICE restart carries If-Match: *")
            else:
                answer = transceiver.restart_ice(session, parsed.ufrag, parsed.pwd, edge)
        except RestartRefused as exc:
            if exc.reason == "too_many":
                return problem(429, "too-many-ice-restarts", "this session made as many ICE restarts as it may;"
                                                             " start a new session")
            if exc.reason == "index_lost":
                return problem(503, "draining", "this transceiver is draining and cannot move the call to a new"
                                                " path; start a new session")
            return problem(409, "ice-not-connected", "ICE cannot restart before it has connected, or while"
                                                     " the session ends")
        return web.Response(status=200, text=answer, content_type=TRICKLE_TYPE, headers={"ETag": session.etag})

    async def delete_session(request: web.Request) -> web.StreamResponse:
        refusal = unsigned(request, await request.read())
        if refusal is not None:
            return refusal
        session = transceiver.sessions.get(request.match_info["session_id"])
        if session is None:
            return problem(404, "no-such-session", "no session with this id is live on this transceiver")
        await transceiver.end(session, "deleted")
        return web.Response(status=200)

    async def status(_request: web.Request) -> web.StreamResponse:
        mux = transceiver.mux
        return web.json_response({
            "node": transceiver.record.node_id if transceiver.record else None,
            "sessions": len(transceiver.sessions),
            "mux": dict(mux.counters) if mux is not None else {},
            "mux_routes": dict(mux.core.events) if mux is not None else {},
            "routes_by_transport": mux.core.routes_by_transport() if mux is not None else {},
            "realtime": dict(transceiver.realtime_counters),
            "hop_refused": dict(refused),
            "media_path": transceiver.config.media_path,
            "media": dict(transceiver.media_counters),
            "setup_hold": dict(transceiver.setup_hold.counters),
            "tasks": len(asyncio.all_tasks()),
            "threads": threading.active_count(),
        })

    app = web.Application(client_max_size=MAX_FORWARDED_CALL_BYTES, middlewares=[telemetry.server_spans()])
    app.router.add_post("/v1/sessions", post_session)
    app.router.add_patch("/v1/sessions/{session_id}", patch_session)
    app.router.add_delete("/v1/sessions/{session_id}", delete_session)
    app.router.add_get("/v1/status", status)
    return app


async def serve(transceiver: Transceiver, hop: HopVerifier, host: str, port: int,
                limits: HttpLimits | None = None) -> web.AppRunner:
    """Serve the API on ``host:port`` within ``limits`` (default HttpLimits()), taking requests signed for
    ``hop``, then start and register ``transceiver`` under that URL."""
    runner, url = await serve_app(create_app(transceiver, hop), host, port, limits or HttpLimits())
    await transceiver.start(url)
    return runner
