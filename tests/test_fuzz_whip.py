"""Fuzzing WHIP offer reading (voicemesh/runtime/http.py: read_offer) with hypothesis, through a real aiohttp
server on loopback: any content type, body and framing (Content-Length or chunked) gets the offer text or a
problem (400, 413, 415), never a server error, and the server keeps answering."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicemesh.runtime.http import read_offer, serve_app

pytestmark = pytest.mark.integration

MAX_BYTES = 300
HEADER_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")


@pytest.fixture
async def whip():
    """A server whose POST /offer answers 200 with the offer read_offer() returns, or its problem.
    Yields (host, port)."""

    async def offer(request: web.Request) -> web.Response:
        result = await read_offer(request, MAX_BYTES)
        return result if isinstance(result, web.Response) else web.Response(text=result)

    app = web.Application()
    app.router.add_post("/offer", offer)
    runner, url = await serve_app(app, "127.0.0.1", 0)
    yield "127.0.0.1", int(url.rpartition(":")[2])
    await runner.cleanup()


content_types = st.one_of(st.sampled_from(["application/sdp", "Application/SDP", "application/sdp; charset=utf-8",
                                           "application/sdp;", "text/plain", "application/sdp, text/plain", ""]),
                          st.text(HEADER_CHARS, max_size=40), st.none())
bodies = st.one_of(st.text(max_size=MAX_BYTES + 20).map(str.encode), st.binary(max_size=MAX_BYTES + 20),
                   st.just(b"v=0\r\n" * 100))


@st.composite
def requests(draw) -> tuple[bytes, bytes]:
    """(request bytes, body) of one POST /offer with Connection: close, framed by Content-Length or chunks."""
    body = draw(bodies)
    content_type = draw(content_types)
    headers = [b"POST /offer HTTP/1.1", b"Host: whip.test", b"Connection: close"]
    if content_type is not None:
        headers.append(b"Content-Type: " + content_type.encode("latin-1"))
    if draw(st.booleans()):
        headers.append(b"Content-Length: %d" % len(body))
        framed = body
    else:
        headers.append(b"Transfer-Encoding: chunked")
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
        framed = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    return b"\r\n".join(headers) + b"\r\n\r\n" + framed, body


async def exchange(address: tuple[str, int], request: bytes) -> tuple[int, bytes]:
    """Send ``request`` on a new connection; the first response's status and the rest of what came
    back (read to the close), or status 0 if the server closed without a response."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    if not response:
        return 0, b""
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests())
async def test_any_offer_request_gets_the_text_or_a_problem(whip, request_and_body):
    request, body = request_and_body
    status, answer = await exchange(whip, request)
    assert status in (200, 400, 413, 415)
    if status == 200:
        assert len(body) <= MAX_BYTES and body.decode("utf-8") == answer.decode("utf-8")
    elif status == 413:
        assert len(body) > MAX_BYTES


VALID = (b"POST /offer HTTP/1.1\r\nHost: whip.test\r\nConnection: close\r\nContent-Type: application/sdp\r\n"
         b"Content-Length: 3\r\n\r\nv=0")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
async def test_garbage_requests_leave_the_server_answering(whip, garbage):
    """Garbage then a valid request on one connection: a client error for the garbage (or the valid
    request's answer, if the garbage was only blank lines); then a new connection is answered."""
    status, _ = await exchange(whip, garbage + b"\r\n\r\n" + VALID)
    assert status == 0 or 200 <= status < 500
    assert await exchange(whip, VALID) == (200, b"v=0")
