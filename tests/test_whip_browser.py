"""A WHIP client written by others, in Chromium, from a web app on another origin: the reference JavaScript
client (whip-whep 1.2.0 from npm, vendored in tests/data/whip-whep-1.2.0 with its MIT licence) publishes
through a whole embedded mesh with trickle ICE, restarts ICE, and hangs up."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from voicemesh.app.demo import bundled_speech, embedded_mesh
from voicemesh.app.lab.browser import CHROMIUM, browser_call
from voicemesh.runtime.http import serve_app

pytestmark = [pytest.mark.system, pytest.mark.skipif(not shutil.which(CHROMIUM), reason="no Chromium")]

CLIENT = Path(__file__).parent / "data" / "whip-whep-1.2.0"
WHIP_JS_SHA256 = "e02b35657f7255a70c1b4aa02a81bbd29a381a6656879febbc9711e4629ba174"
"""whip.js exactly as in the npm tarball of whip-whep 1.2.0 (``npm pack whip-whep@1.2.0``, integrity
sha512-CP+Tht3O/N6QLebW5LxsNKgzFN5KX6WinLr1SLs74feagYu+Gqy+0dw48p5RQuE+FlrM4xyOlOdW2UOQwljImA==)."""
API_KEY = "sk-app-" + "5" * 24


async def app_origin() -> tuple[web.AppRunner, str]:
    """The web app's own server (another origin than the edge's: another port) serving the page and whip.js."""
    app = web.Application()
    app.router.add_static("/", CLIENT)
    return await serve_app(app, "127.0.0.1", 0)


async def client_token(edge_url: str, origin: str) -> str:
    """What the app's backend does: a client token bound to the page's origin, for its API key."""
    async with aiohttp.ClientSession(raise_for_status=True) as http, http.post(
            f"{edge_url}/v1/client_secrets", json={"origin": origin},
            headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
        return (await resp.json())["value"]


def test_the_vendored_client_is_the_published_one() -> None:
    assert hashlib.sha256((CLIENT / "whip.js").read_bytes()).hexdigest() == WHIP_JS_SHA256


async def test_the_reference_client_calls_from_another_origin_with_trickle_and_an_ice_restart() -> None:
    runner, origin = await app_origin()
    try:
        async with embedded_mesh(edge_options={"api_keys": f"app:{API_KEY}", "cors_origins": origin}) as mesh:
            page = URL(f"{origin}/page.html").with_query(
                whip=mesh.whip_url, token=await client_token(mesh.edge.url, origin))
            result = await browser_call(str(page), bundled_speech(), seconds=2)

            assert result["ok"], result
            methods = [(r["method"], r["status"]) for r in result["requests"]]
            assert methods[0] == ("POST", 201)
            assert ("PATCH", 200) in methods, "the ICE restart was answered"
            assert all(status == 204 for method, status in methods if method == "PATCH" and status != 200), \
                "every trickle PATCH was taken"
            assert methods[-1] == ("DELETE", 200)
            post_etag = result["requests"][0]["etag"]
            restart_etag = next(r["etag"] for r in result["requests"] if r["status"] == 200)
            assert post_etag and restart_etag and post_etag != restart_etag, "ETags are readable cross-origin"
            assert result["after"] - result["during"] > 50, "the echo kept coming after the restart"
            assert result["paths"][0] != result["paths"][1], "the media moved to the restarted ICE's path"
            assert mesh.transceiver.mux.core.events["rekeyed"] == 1
            assert mesh.transceiver.sessions == {}
    finally:
        await runner.cleanup()
