"""The transceiver's HTTP API, reached by edges over the backbone (not by callers).

``POST /v1/sessions`` takes the caller's WHIP offer as forwarded by an edge,
with the edge's identity in headers, and returns ``201`` with the answer and
``Location``; ``DELETE /v1/sessions/{id}`` ends a session; ``GET /v1/status``
reports sessions, the mux's counters (``mux``: drops by reason, ``rx``, ``tx``), its route
events (``mux_routes``), its live routes by the caller's transport (``routes_by_transport``: udp, tcp)
and the asyncio tasks of the process (``tasks``). Errors are RFC 9457 problem details. An offer from an
edge that serves ICE-TCP carries its TCP address (``Voicemesh-Relay-Tcp-Address``); the answer then has a
passive TCP candidate after the UDP one (core/offer.py add_tcp_candidate).

POST and DELETE must carry an edge's hop signature (voicemesh/wire/hopauth.py): an unsigned, wrongly
signed, stale or replayed one gets ``401`` and is counted by reason in the status's ``hop_refused``. The
status stays open to the backbone: it is read-only and tells no caller's data, only counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from aiohttp import web

from voicemesh.core.offer import OfferRejected
from voicemesh.core.transceiver import Capacity, EdgeHop, Transceiver
from voicemesh.runtime import telemetry
from voicemesh.runtime.http import HttpLimits, problem, read_offer, serve_app
from voicemesh.wire.addr import parse_hostport
from voicemesh.wire.hopauth import SIGNATURE, BadSignature, HopRequest, HopVerifier
from voicemesh.wire.signaling import CLIENT_ADDRESS, EDGE_ID, MAX_OFFER_BYTES, RELAY_ADDRESS, RELAY_TCP_ADDRESS, SDP_TYPE

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

    async def post_session(request: web.Request) -> web.StreamResponse:
        offer = await read_offer(request, MAX_OFFER_BYTES)
        if isinstance(offer, web.Response):
            return offer
        refusal = unsigned(request, offer.encode())
        if refusal is not None:
            return refusal
        try:
            edge = EdgeHop(
                edge_id=int(request.headers[EDGE_ID]),
                relay=parse_hostport(request.headers[RELAY_ADDRESS]),
                client_ip=request.headers.get(CLIENT_ADDRESS, ""),
                relay_tcp=parse_hostport(request.headers[RELAY_TCP_ADDRESS]) if RELAY_TCP_ADDRESS in request.headers
                else None,
            )
        except (KeyError, ValueError):
            return problem(400, "missing-edge-headers",
                           f"offers reach a transceiver through an edge, with {EDGE_ID} and {RELAY_ADDRESS}")
        try:
            session = await transceiver.create_session(offer, edge)
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
            headers={"Location": f"/v1/sessions/{session.id}"},
        )

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
            "hop_refused": dict(refused),
            "tasks": len(asyncio.all_tasks()),
        })

    app = web.Application(client_max_size=MAX_OFFER_BYTES, middlewares=[telemetry.server_spans()])
    app.router.add_post("/v1/sessions", post_session)
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
