"""The call page every edge serves at ``GET /`` (edge/static/call.html), over real HTTP: the page, its
Content-Security-Policy, and the WHIP headers it reads."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from aiohttp import ClientSession

from voicemesh.edge.cors import Cors
from voicemesh.edge.whip import EDGE_HEADER, PIN_HEADER, WhipFront
from voicemesh.registry import MemoryRegistry, NodeRecord
from voicemesh.runtime.http import serve_app
from voicemesh.wire.clienttoken import ClientTokenCodec
from voicemesh.wire.hopauth import HopSigner
from voicemesh.wire.meshkeys import MeshKeys

pytestmark = pytest.mark.integration


def front() -> WhipFront:
    keys = MeshKeys({1: b"k" * 32}, 1)
    return WhipFront(MemoryRegistry(), lambda: NodeRecord("edge", "local", "edge-1"), dict, hop=HopSigner(keys),
                     client_tokens=ClientTokenCodec(keys), cors=Cors(["https://app.example"]))


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_the_edge_serves_its_call_page() -> None:
    whip = front()
    runner, url = await serve_app(whip.app(), "127.0.0.1", 0)
    try:
        async with ClientSession() as http, http.get(f"{url}/") as resp:
            page = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/html"
        assert 'fetch("/v1/sessions"' in page and "getStats" in page and "window.result" in page
        assert 'createDataChannel("oai-events")' in page and 'id="call"' in page and 'id="hangup"' in page
    finally:
        await runner.cleanup()
        await whip.close()


async def test_the_call_page_runs_only_its_own_inline_script_and_style() -> None:
    """The CSP allows the page's one script and one style by hash, and nothing inline or from elsewhere; the
    page has no inline event handlers (a CSP without 'unsafe-inline' would block them)."""
    whip = front()
    runner, url = await serve_app(whip.app(), "127.0.0.1", 0)
    try:
        async with ClientSession() as http, http.get(f"{url}/") as resp:
            page, headers = await resp.text(), resp.headers
        policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
        (script,) = re.findall(r"<script>(.*?)</script>", page, re.S)
        (style,) = re.findall(r"<style>(.*?)</style>", page, re.S)
        assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
        assert policy["script-src"] == sha256(script) and policy["style-src"] == sha256(style)
        assert "unsafe" not in headers["Content-Security-Policy"]
        assert not re.search(r"<[^>]+\son[a-z]+=", page) and "<script src" not in page and "style=" not in page
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"
    finally:
        await runner.cleanup()
        await whip.close()


async def test_a_page_on_another_origin_may_read_the_serving_edge_and_region() -> None:
    whip = front()
    runner, url = await serve_app(whip.app(), "127.0.0.1", 0)
    try:
        async with ClientSession() as http, http.post(f"{url}/v1/sessions", data=b"v=0\r\n", headers={
                "Content-Type": "application/sdp", "Origin": "https://app.example"}) as resp:
            exposed = {name.strip() for name in resp.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Location", EDGE_HEADER, PIN_HEADER} <= exposed
    finally:
        await runner.cleanup()
        await whip.close()
