"""HTTP pieces shared by the WHIP front and the transceiver API: RFC 9457 problems, offer bodies, and serving
with the same limits on every server (read timeouts, a connection cap, keep-alive limits)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from voicemesh.wire.addr import format_hostport
from voicemesh.wire.signaling import SDP_TYPE, TRICKLE_TYPE

PROBLEM_TYPE_BASE = "https://voicemesh.dev/problems/"


def problem(status: int, title: str, detail: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """An ``application/problem+json`` response (RFC 9457 3).

    ``title`` is a short stable slug (for example ``no-bundle``) that also
    names the ``type`` URI; ``detail`` explains this occurrence to a human.
    """
    body = {"type": PROBLEM_TYPE_BASE + title, "title": title, "status": status, "detail": detail}
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/problem+json",
        headers=headers,
    )


async def read_offer(request: web.Request, max_bytes: int) -> str | web.Response:
    """Read a WHIP offer body (RFC 9725 4.2): the SDP text, or a problem response.

    Returns 415 for a content type other than ``application/sdp``, 413 for a
    body over ``max_bytes`` (bytes), 400 for a body that is not UTF-8.
    """
    if request.content_type != SDP_TYPE:
        return problem(415, "unsupported-media-type",
                       f"the offer must be sent as {SDP_TYPE}, not {request.content_type or 'no content type'}")
    if request.content_length is not None and request.content_length > max_bytes:
        return problem(413, "offer-too-large", f"the offer is {request.content_length} bytes; the limit is {max_bytes}")
    body = b""
    while len(body) <= max_bytes and (chunk := await request.content.read(max_bytes + 1 - len(body))):
        body += chunk
    if len(body) > max_bytes:
        return problem(413, "offer-too-large", f"the offer is over the {max_bytes} byte limit")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return problem(400, "malformed-sdp", "the offer is not UTF-8 text")


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
