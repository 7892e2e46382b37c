"""HTTP pieces shared by the WHIP front and the transceiver API: RFC 9457 problems, offer bodies, serving."""

from __future__ import annotations

import json

from aiohttp import web

from voicemesh.wire.addr import format_hostport
from voicemesh.wire.signaling import SDP_TYPE

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


async def serve_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (0 picks a port); returns the runner and the base URL.

    Raises OSError if the address cannot be bound.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
    return runner, f"http://{format_hostport((bound[0], bound[1]))}"
