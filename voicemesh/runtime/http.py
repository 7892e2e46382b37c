"""HTTP pieces shared by the WHIP front and the transceiver API: RFC 9457 problems, offer bodies, and serving
with the same limits on every server (read timeouts, a connection cap, keep-alive limits)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from voicemesh.wire.addr import format_hostport
from voicemesh.wire.signaling import (
    CALL_TYPE,
    MAX_CALL_BYTES,
    MAX_FORWARDED_CALL_BYTES,
    MAX_OFFER_BYTES,
    MAX_SESSION_BYTES,
    MULTIPART_TYPE,
    SDP_TYPE,
    TRICKLE_TYPE,
)

PROBLEM_TYPE_BASE = "https://voicemesh.dev/problems/"
PROBLEM_TITLE = web.ResponseKey("voicemesh_problem_title", str)
"""Key of a problem response's own mapping (aiohttp responses are mappings) holding its title, for counters."""


def problem(status: int, title: str, detail: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """An ``application/problem+json`` response (RFC 9457 3).

    ``title`` is a short stable slug (for example ``no-bundle``) that also
    names the ``type`` URI (and is kept as ``response[PROBLEM_TITLE]``); ``detail`` explains this
    occurrence to a human.
    """
    body = {"type": PROBLEM_TYPE_BASE + title, "title": title, "status": status, "detail": detail}
    response = web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/problem+json",
        headers=headers,
    )
    response[PROBLEM_TITLE] = title
    return response


async def read_offer(request: web.Request, max_bytes: int) -> str | web.Response:
    """Read a WHIP offer body (RFC 9725 4.2): the SDP text, or a problem response.

    Returns 415 for a content type other than ``application/sdp``, 413 for a
    body over ``max_bytes`` (bytes), 400 for a body that is not UTF-8.
    """
    if request.content_type != SDP_TYPE:
        return problem(415, "unsupported-media-type",
                       f"the offer must be sent as {SDP_TYPE}, not {request.content_type or 'no content type'}")
    body = await _read_body(request, max_bytes)
    if isinstance(body, web.Response):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return problem(400, "malformed-sdp", "the offer is not UTF-8 text")


async def _read_body(request: web.Request, max_bytes: int) -> bytes | web.Response:
    """The request's body, or 413 ``offer-too-large`` if it is over ``max_bytes`` (declared or read)."""
    if request.content_length is not None and request.content_length > max_bytes:
        return problem(413, "offer-too-large", f"the offer is {request.content_length} bytes; the limit is {max_bytes}")
    body = b""
    while len(body) <= max_bytes and (chunk := await request.content.read(max_bytes + 1 - len(body))):
        body += chunk
    if len(body) > max_bytes:
        return problem(413, "offer-too-large", f"the offer is over the {max_bytes} byte limit")
    return body


@dataclass(frozen=True)
class CallOffer:
    """An offer with the caller's session configuration: ``sdp``, and ``session``, a JSON object as compact
    text ("" if none), as an OpenAI Realtime call sends them (``POST /v1/realtime/calls``)."""

    sdp: str
    session: str = ""


async def read_call(request: web.Request) -> CallOffer | web.Response:
    """Read an offer sent as ``application/sdp`` (as read_offer, the session empty) or as
    ``multipart/form-data`` (RFC 7578) with a part ``sdp`` and an optional part ``session`` (a JSON
    object), each at most once and nothing else; or a problem response.

    Limits: MAX_OFFER_BYTES for the SDP, MAX_SESSION_BYTES for the session, MAX_CALL_BYTES for the whole
    multipart body (declared length). Problems: 415 ``unsupported-media-type``; 413 ``offer-too-large``,
    ``session-too-large``; 400 ``malformed-multipart`` (not multipart as RFC 7578 says, a part missing,
    repeated or unknown), ``malformed-sdp`` (not UTF-8), ``malformed-session`` (not a UTF-8 JSON object).
    """
    if request.content_type == SDP_TYPE:
        offer = await read_offer(request, MAX_OFFER_BYTES)
        return offer if isinstance(offer, web.Response) else CallOffer(offer)
    if request.content_type != MULTIPART_TYPE:
        return problem(415, "unsupported-media-type", f"the offer must be sent as {SDP_TYPE} or {MULTIPART_TYPE},"
                                                      f" not {request.content_type or 'no content type'}")
    if request.content_length is not None and request.content_length > MAX_CALL_BYTES:
        return problem(413, "offer-too-large", f"the body is {request.content_length} bytes; the limit is"
                                               f" {MAX_CALL_BYTES}")
    limits = {"sdp": MAX_OFFER_BYTES, "session": MAX_SESSION_BYTES}
    parts: dict[str, bytes] = {}
    try:
        async for part in await request.multipart():
            name = part.name if isinstance(part, BodyPartReader) else None
            if name not in limits or name in parts:
                what = f"a second {name!r} part" if name in parts else f"a part named {name!r}"
                return problem(400, "malformed-multipart", f"the form has {what}; it takes one 'sdp' and at most"
                                                           " one 'session'")
            assert isinstance(part, BodyPartReader) and name is not None
            data = b""
            while len(data) <= limits[name] and (chunk := await part.read_chunk(limits[name] + 1 - len(data))):
                data += chunk
            if len(data) > limits[name]:
                title = "offer-too-large" if name == "sdp" else "session-too-large"
                return problem(413, title, f"the {name!r} part is over the {limits[name]} byte limit")
            parts[name] = data
    except (ValueError, HttpProcessingError) as exc:
        return problem(400, "malformed-multipart", f"the body is not {MULTIPART_TYPE} (RFC 7578): {exc}")
    if "sdp" not in parts:
        return problem(400, "malformed-multipart", "the form has no 'sdp' part")
    try:
        sdp = parts["sdp"].decode("utf-8")
    except UnicodeDecodeError:
        return problem(400, "malformed-sdp", "the offer is not UTF-8 text")
    if "session" not in parts:
        return CallOffer(sdp)
    try:
        session = json.loads(parts["session"].decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        session = None
    if not isinstance(session, dict):
        return problem(400, "malformed-session", "the 'session' part must be a JSON object")
    return CallOffer(sdp, json.dumps(session, separators=(",", ":"), ensure_ascii=False))


def encode_call(offer: CallOffer) -> tuple[bytes, str]:
    """The body and content type of ``offer`` on the signaling hop (edge to transceiver): the SDP as
    ``application/sdp`` without a session, else ``{"sdp": ..., "session": {...}}`` as CALL_TYPE, which
    read_forwarded_call takes (the hop signs the exact body, so the transceiver parses what it verified)."""
    if not offer.session:
        return offer.sdp.encode(), SDP_TYPE
    body = json.dumps({"sdp": offer.sdp, "session": json.loads(offer.session)}, separators=(",", ":"),
                      ensure_ascii=False)
    return body.encode(), CALL_TYPE


async def read_forwarded_call(request: web.Request) -> tuple[CallOffer, bytes] | web.Response:
    """Read an offer as encode_call sends it: the CallOffer and the body's bytes, or a problem response
    (415, 413 ``offer-too-large`` over MAX_FORWARDED_CALL_BYTES, 400 ``malformed-sdp`` or ``malformed-call``
    for a CALL_TYPE body that is not ``{"sdp": string, "session": object}``)."""
    if request.content_type == SDP_TYPE:
        offer = await read_offer(request, MAX_OFFER_BYTES)
        return offer if isinstance(offer, web.Response) else (CallOffer(offer), offer.encode())
    if request.content_type != CALL_TYPE:
        return problem(415, "unsupported-media-type", f"the offer must be sent as {SDP_TYPE} or {CALL_TYPE}")
    body = await _read_body(request, MAX_FORWARDED_CALL_BYTES)
    if isinstance(body, web.Response):
        return body
    try:
        call = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        call = None
    if not (isinstance(call, dict) and isinstance(call.get("sdp"), str) and isinstance(call.get("session"), dict)):
        return problem(400, "malformed-call", 'the body must be a JSON object {"sdp": string, "session": object}')
    return CallOffer(call["sdp"], json.dumps(call["session"], separators=(",", ":"), ensure_ascii=False)), body


async def read_sdpfrag(request: web.Request, max_bytes: int) -> str | web.Response:
    """Read a WHIP PATCH body (RFC 9725 4.3.1, RFC 8840): the SDP fragment text, or a problem response.

    Returns 415 for a content type other than ``application/trickle-ice-sdpfrag``, 413 for a body over
    ``max_bytes`` (bytes), 400 for a body that is not UTF-8.
    """
    if request.content_type != TRICKLE_TYPE:
        return problem(415, "unsupported-media-type", f"a PATCH must be sent as {TRICKLE_TYPE}, not "
                                                      f"{request.content_type or 'no content type'}")
    if request.content_length is not None and request.content_length > max_bytes:
        return problem(413, "sdpfrag-too-large", f"the body is {request.content_length} bytes; the limit is {max_bytes}")
    body = await request.content.read(max_bytes + 1)
    while len(body) <= max_bytes and (chunk := await request.content.read(max_bytes + 1 - len(body))):
        body += chunk
    if len(body) > max_bytes:
        return problem(413, "sdpfrag-too-large", f"the body is over the {max_bytes} byte limit")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return problem(400, "malformed-sdpfrag", "the body is not UTF-8 text")


def if_match(header: str | None, etag: str) -> bool | None:
    """Evaluate an ``If-Match`` header (RFC 9110 13.1.1) against the current strong ``etag`` (quoted):
    None if the header is absent (a WHIP PATCH then gets 428, RFC 6585 3), True for ``*`` or a list holding
    ``etag`` (strong comparison: a weak tag never matches), else False (412)."""
    if header is None:
        return None
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or etag in tags


@dataclass(frozen=True)
class HttpLimits:
    """What one HTTP server allows a client (durations in seconds).

    ``header_timeout_s``: from a connection's start, or a kept-alive
    connection's first byte of its next request, to the end of the request
    head. ``body_timeout_s``: from the end of the head to the end of the body.
    ``idle_timeout_s``: a kept-alive connection with no request in progress.
    ``max_requests``: requests on one connection before it is closed.
    ``max_connections``: open connections; over it a new one gets ``503`` and
    is closed. ``max_line_bytes`` and ``max_headers`` bound the request head.
    """

    header_timeout_s: float = 5.0
    body_timeout_s: float = 10.0
    idle_timeout_s: float = 15.0
    max_requests: int = 100
    max_connections: int = 1024
    max_line_bytes: int = 4096
    max_headers: int = 64


HTTP_COUNTERS = web.AppKey("voicemesh_http_counters", Counter)
"""The app key of a served app's connection counters (``Counter[str]``): ``connections``, ``requests``,
``closed_header_timeout``, ``closed_body_timeout``, ``closed_max_requests``, ``refused_max_connections``."""

_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n")


class _Connection(asyncio.Protocol):
    """One client connection: aiohttp's protocol inside, with the deadlines aiohttp does not keep.

    Everything the transport reports is passed on to the inner protocol. A deadline that passes
    aborts the transport, which makes aiohttp cancel the request's handler.
    """

    def __init__(self, guard: _Guard) -> None:
        self.guard = guard
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.requests = 0
        self.in_request = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.guard.admit(self):
            self.transport.write(_REFUSED)  # type: ignore[union-attr]
            transport.close()
            return
        self.inner = self.guard.make_protocol()
        self.inner.connection_made(transport)
        self.expect("header_timeout")

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if not self.in_request and self._deadline is None:
            self.expect("header_timeout")
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_deadline()
        if self.inner is not None:
            self.guard.release(self)
            self.inner.connection_lost(exc)

    def expect(self, reason: str, done: Callable[[], bool] = lambda: False) -> None:
        """Arm the deadline for ``reason`` (``header_timeout`` or ``body_timeout``), replacing any armed
        one. When it passes, the connection is aborted and counted as ``closed_<reason>``, unless
        ``done()`` holds by then."""
        self.cancel_deadline()
        timeout = self.guard.limits.header_timeout_s if reason == "header_timeout" else self.guard.limits.body_timeout_s

        def expire() -> None:
            self._deadline = None
            if not done() and self.transport is not None:
                self.guard.counters[f"closed_{reason}"] += 1
                self.transport.abort()

        self._deadline = asyncio.get_running_loop().call_later(timeout, expire)

    def cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class _Guard:
    """The connections of one served app, their count and deadlines, and the middleware that sees
    where each request's head ends."""

    def __init__(self, limits: HttpLimits, make_protocol: Callable[[], asyncio.Protocol], counters: Counter) -> None:
        self.limits = limits
        self.make_protocol = make_protocol
        self.counters = counters
        self.connections: dict[asyncio.BaseTransport, _Connection] = {}

    def admit(self, conn: _Connection) -> bool:
        if len(self.connections) >= self.limits.max_connections:
            self.counters["refused_max_connections"] += 1
            return False
        assert conn.transport is not None
        self.connections[conn.transport] = conn
        self.counters["connections"] += 1
        return True

    def release(self, conn: _Connection) -> None:
        if conn.transport is not None:
            self.connections.pop(conn.transport, None)

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        conn = self.connections.get(request.transport)  # type: ignore[arg-type]
        if conn is None:
            return await handler(request)
        conn.requests += 1
        conn.in_request = True
        self.counters["requests"] += 1
        body = request.content
        if body.is_eof():
            conn.cancel_deadline()
        else:
            conn.expect("body_timeout", body.is_eof)
        try:
            response = await handler(request)
        finally:
            conn.in_request = False
            conn.cancel_deadline()
        if conn.requests >= self.limits.max_requests and not response.prepared:
            self.counters["closed_max_requests"] += 1
            response.force_close()
        return response


class _GuardedSite(web.TCPSite):
    """A TCP site whose connections go through a _Guard."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: _Guard, reuse_port: bool) -> None:
        super().__init__(runner, host, port, reuse_port=reuse_port or None)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self.guard), self._host, self._port, backlog=self._backlog,
            reuse_port=self._reuse_port)


async def serve_app(app: web.Application, host: str, port: int,
                    limits: HttpLimits = HttpLimits(), *, reuse_port: bool = False) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (0 picks a port) within ``limits``; returns the runner and the base URL.
    ``reuse_port`` sets SO_REUSEPORT, so a new process can listen beside this one (a hitless upgrade).

    aiohttp keeps the idle keep-alive timeout and the head's size limits; the
    header and body timeouts, the request count per connection and the
    connection cap are kept here, for every server alike. A handler whose
    client goes away (or is closed by a deadline) is cancelled. The app's
    counters are at ``app[HTTP_COUNTERS]``. Call before the app starts (its
    middlewares are still open). Raises OSError if the address cannot be bound.
    """
    counters: Counter[str] = Counter()
    app[HTTP_COUNTERS] = counters
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, keepalive_timeout=limits.idle_timeout_s,
                           max_line_size=limits.max_line_bytes, max_field_size=limits.max_line_bytes,
                           max_headers=limits.max_headers)
    guard = _Guard(limits, lambda: runner.server(), counters)  # type: ignore[misc]
    app.middlewares.insert(0, guard.middleware)
    await runner.setup()
    site = _GuardedSite(runner, host, port, guard, reuse_port)
    await site.start()
    bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
    return runner, f"http://{format_hostport((bound[0], bound[1]))}"
