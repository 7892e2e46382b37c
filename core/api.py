"""The transceiver's HTTP API, reached by edges over the backbone (not by callers).

``POST /v1/sessions`` takes the caller's WHIP offer as forwarded by an edge,
with the edge's identity in headers, and returns ``201`` with the answer and
``Location``; ``DELETE /v1/sessions/{id}`` ends a session; ``GET /v1/status``
reports sessions and mux counters. Errors are RFC 9457 problem details.
"""

from __future__ import annotations

from aiohttp import web

from voicemesh.core.offer import OfferRejected
from voicemesh.core.transceiver import Capacity, EdgeHop, Transceiver
from voicemesh.runtime import telemetry
from voicemesh.runtime.http import HttpLimits, problem, read_offer, serve_app
from voicemesh.wire.addr import parse_hostport
from voicemesh.wire.signaling import CLIENT_ADDRESS, EDGE_ID, MAX_OFFER_BYTES, RELAY_ADDRESS, SDP_TYPE


def create_app(transceiver: Transceiver) -> web.Application:
    """An aiohttp application serving ``transceiver``."""

    async def post_session(request: web.Request) -> web.StreamResponse:
        offer = await read_offer(request, MAX_OFFER_BYTES)
        if isinstance(offer, web.Response):
            return offer
        try:
            edge = EdgeHop(
                edge_id=int(request.headers[EDGE_ID]),
                relay=parse_hostport(request.headers[RELAY_ADDRESS]),
                client_ip=request.headers.get(CLIENT_ADDRESS, ""),
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
            text=session.pc.localDescription.sdp,
            content_type=SDP_TYPE,
            headers={"Location": f"/v1/sessions/{session.id}"},
        )

    async def delete_session(request: web.Request) -> web.StreamResponse:
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
        })

    app = web.Application(client_max_size=MAX_OFFER_BYTES, middlewares=[telemetry.server_spans()])
    app.router.add_post("/v1/sessions", post_session)
    app.router.add_delete("/v1/sessions/{session_id}", delete_session)
    app.router.add_get("/v1/status", status)
    return app


async def serve(transceiver: Transceiver, host: str, port: int, limits: HttpLimits | None = None) -> web.AppRunner:
    """Serve the API on ``host:port`` within ``limits`` (default HttpLimits()), then start and register
    ``transceiver`` under that URL."""
    runner, url = await serve_app(create_app(transceiver), host, port, limits or HttpLimits())
    await transceiver.start(url)
    return runner
