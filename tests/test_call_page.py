"""The call page every edge serves at ``GET /`` (edge/static/call.html), over real HTTP."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession

from voicemesh.edge.whip import WhipFront
from voicemesh.registry import MemoryRegistry
from voicemesh.runtime.http import serve_app
from voicemesh.wire.clienttoken import ClientTokenCodec
from voicemesh.wire.hopauth import HopSigner
from voicemesh.wire.meshkeys import MeshKeys

pytestmark = pytest.mark.integration


async def test_the_edge_serves_its_call_page() -> None:
    keys = MeshKeys({1: b"k" * 32}, 1)
    front = WhipFront(MemoryRegistry(), lambda: None, dict, hop=HopSigner(keys), client_tokens=ClientTokenCodec(keys))
    runner, url = await serve_app(front.app(), "127.0.0.1", 0)
    try:
        async with ClientSession() as http, http.get(f"{url}/") as resp:
            page = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/html"
        assert 'fetch("/v1/sessions"' in page and "getStats" in page and "window.result" in page
    finally:
        await runner.cleanup()
        await front.close()
