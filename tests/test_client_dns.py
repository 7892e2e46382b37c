"""voicemesh call looks the WHIP host up before it makes the offer (voicemesh/app/client.py), so the answer's
time holds no DNS lookup: the POST's connection takes the address found then."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from voicemesh.app.client import _AheadResolver

pytestmark = pytest.mark.integration


async def test_the_post_takes_the_address_looked_up_before_the_offer() -> None:
    app = web.Application()
    app.router.add_post("/v1/sessions", lambda _request: web.Response(status=201))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    resolver = _AheadResolver()
    lookups = []
    inner = resolver._inner.resolve

    async def counted(host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list:
        lookups.append(host)
        return await inner(host, port, family)

    resolver._inner.resolve = counted  # type: ignore[method-assign]
    try:
        assert await resolver.ahead(URL(f"http://127.0.0.1:{port}/")) is None  # an address: nothing to look up
        url = URL(f"http://localhost:{port}/v1/sessions")
        took_ms = await resolver.ahead(url)
        assert took_ms is not None and lookups == ["localhost"]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)) as http:
            async with http.post(url, data=b"v=0") as resp:
                assert resp.status == 201
        assert lookups == ["localhost"]  # the POST looked nothing up
    finally:
        await runner.cleanup()
