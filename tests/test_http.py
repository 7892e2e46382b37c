"""Every HTTP server we run (WHIP front and call page, transceiver API) goes through serve_app's limits:
header and body read timeouts, a connection cap, keep-alive limits. Slow clients are closed; real calls
go on meanwhile."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from voicemesh.app.client import call
from voicemesh.app.demo import LOOPBACK, bundled_speech, embedded_mesh
from voicemesh.runtime.http import HTTP_COUNTERS, HttpLimits, if_match, serve_app

pytestmark = pytest.mark.integration

SLOW = 100
"""Slow connections of each kind (partial head, stalled body, idle keep-alive)."""

HANG_GUARD_S = 30.0
"""Longest wait for the server to close a connection before the test gives up (not a timing assertion)."""


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Read until the server closes the connection; returns what it sent."""
    received = b""
    try:
        while chunk := await reader.read(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


async def partial_head(url: str) -> bytes:
    """Slowloris: a request head that never ends, one header byte at a time."""
    reader, writer = await asyncio.open_connection(*host_port(url))
    writer.write(b"POST /v1/sessions HTTP/1.1\r\nHost: edge\r\n")

    async def trickle() -> None:
        while True:
            writer.write(b"X")
            await asyncio.sleep(0.2)

    trickling = asyncio.ensure_future(trickle())
    try:
        return await closed_by_server(reader)
    finally:
        trickling.cancel()
        writer.close()


async def stalled_body(url: str, source: str) -> bytes:
    """A whole head announcing a 4000-byte offer, then a few bytes of it and nothing more."""
    reader, writer = await asyncio.open_connection(*host_port(url))
    writer.write(b"POST /v1/sessions HTTP/1.1\r\nHost: edge\r\nContent-Type: application/sdp\r\n"
                 b"X-Forwarded-For: " + source.encode() + b"\r\nContent-Length: 4000\r\n\r\nv=0\r\n")
    try:
        return await closed_by_server(reader)
    finally:
        writer.close()


async def idle_keep_alive(url: str) -> bytes:
    """One request on a kept-alive connection, then silence."""
    reader, writer = await asyncio.open_connection(*host_port(url))
    writer.write(b"GET /v1/status HTTP/1.1\r\nHost: edge\r\n\r\n")
    try:
        return await closed_by_server(reader)
    finally:
        writer.close()


async def test_hundreds_of_slow_connections_are_closed_while_a_call_succeeds() -> None:
    options = {"http_header_timeout_s": 1.0, "http_body_timeout_s": 1.0, "http_idle_timeout_s": 1.5}
    async with embedded_mesh(edge_options=options) as mesh:
        url = mesh.edge.url
        slow = ([partial_head(url) for _ in range(SLOW)]
                + [stalled_body(url, f"198.51.{i // 250}.{i % 250 + 1}") for i in range(SLOW)]
                + [idle_keep_alive(url) for _ in range(SLOW)])
        attack = asyncio.ensure_future(asyncio.wait_for(asyncio.gather(*slow), HANG_GUARD_S))
        await asyncio.sleep(0.3)
        report = await call(mesh.whip_url, bundled_speech(), bind=LOOPBACK)
        assert report.ok and report.correlation is not None and report.correlation > 0.5, report.error
        received = await attack
        heads, bodies, idles = received[:SLOW], received[SLOW:2 * SLOW], received[2 * SLOW:]
        assert all(r == b"" for r in heads + bodies), "slow requests are closed without an answer"
        assert all(r.startswith(b"HTTP/1.1 200") for r in idles), "the idle connections were answered first"
        async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/status") as resp:
            counters = (await resp.json())["http"]
        assert counters["closed_header_timeout"] >= SLOW and counters["closed_body_timeout"] == SLOW


async def test_the_transceiver_api_closes_a_stalled_body_too() -> None:
    async with embedded_mesh() as mesh:
        assert await asyncio.wait_for(stalled_body(mesh.transceiver.record.http, "192.0.2.1"), HANG_GUARD_S) == b""


async def hello(_request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def serve_hello(limits: HttpLimits) -> tuple[web.AppRunner, str, web.Application]:
    app = web.Application()
    app.router.add_get("/", hello)
    runner, url = await serve_app(app, LOOPBACK, 0, limits)
    return runner, url, app


async def test_connections_over_the_cap_get_503_and_are_closed() -> None:
    runner, url, app = await serve_hello(HttpLimits(max_connections=20))
    try:
        held = [await asyncio.open_connection(*host_port(url)) for _ in range(20)]
        reader, writer = await asyncio.open_connection(*host_port(url))
        refused = await asyncio.wait_for(closed_by_server(reader), HANG_GUARD_S)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in refused
        held.pop()[1].close()
        statuses = []
        while not statuses or statuses[-1] == 503:  # until the server has seen the close
            async with aiohttp.ClientSession() as http, http.get(url) as resp:
                statuses.append(resp.status)
            assert len(statuses) < 500, "a connection was not admitted after one closed"
        assert statuses[-1] == 200
        assert app[HTTP_COUNTERS]["refused_max_connections"] >= 1
        for _, held_writer in held:
            held_writer.close()
    finally:
        await runner.cleanup()


async def test_a_connection_is_closed_after_its_last_allowed_request() -> None:
    runner, url, app = await serve_hello(HttpLimits(max_requests=3))
    try:
        reader, writer = await asyncio.open_connection(*host_port(url))
        for i in range(3):
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(len(b"hello"))
            assert (b"Connection: close" in head) == (i == 2)
        assert await asyncio.wait_for(closed_by_server(reader), HANG_GUARD_S) == b""
        writer.close()
        assert app[HTTP_COUNTERS]["closed_max_requests"] == 1 and app[HTTP_COUNTERS]["requests"] == 3
    finally:
        await runner.cleanup()


def test_if_match_follows_rfc_9110_strong_comparison() -> None:
    assert if_match(None, '"a1"') is None
    assert if_match("*", '"a1"') and if_match('"zz", "a1"', '"a1"')
    assert not if_match('"a2"', '"a1"') and not if_match('W/"a1"', '"a1"') and not if_match("a1", '"a1"')
