"""A WHIP client written by others, in Chromium, from a web app on another origin: the reference JavaScript
client (whip-whep 1.2.0 from npm, vendored in tests/data/whip-whep-1.2.0 with its MIT licence) publishes
through a whole embedded mesh with trickle ICE, restarts ICE, and hangs up; and, in a network namespace
with two links, keeps its call when its network changes and it restarts ICE."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from voicemesh.app import audio
from voicemesh.app.demo import bundled_speech, embedded_mesh
from voicemesh.app.lab.browser import CHROMIUM, FLAGS, browser_call
from voicemesh.runtime.http import serve_app

pytestmark = [pytest.mark.system, pytest.mark.skipif(not shutil.which(CHROMIUM), reason="no Chromium")]

CLIENT = Path(__file__).parent / "data" / "whip-whep-1.2.0"
WHIP_JS_SHA256 = "e02b35657f7255a70c1b4aa02a81bbd29a381a6656879febbc9711e4629ba174"
"""whip.js exactly as in the npm tarball of whip-whep 1.2.0 (``npm pack whip-whep@1.2.0``, integrity
sha512-CP+Tht3O/N6QLebW5LxsNKgzFN5KX6WinLr1SLs74feagYu+Gqy+0dw48p5RQuE+FlrM4xyOlOdW2UOQwljImA==)."""
API_KEY = "sk-app-" + "5" * 24


async def app_origin(host: str = "127.0.0.1", app: web.Application | None = None) -> tuple[web.AppRunner, str]:
    """The web app's own server (another origin than the edge's: another port) serving the page and whip.js."""
    app = app or web.Application()
    app.router.add_static("/", CLIENT)
    return await serve_app(app, host, 0)


async def client_token(edge_url: str, origin: str) -> str:
    """What the app's backend does: a client token bound to the page's origin, for its API key."""
    async with aiohttp.ClientSession(raise_for_status=True) as http, http.post(
            f"{edge_url}/v1/client_secrets", json={"origin": origin},
            headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
        return (await resp.json())["value"]


def test_the_vendored_client_is_the_published_one() -> None:
    assert hashlib.sha256((CLIENT / "whip.js").read_bytes()).hexdigest() == WHIP_JS_SHA256


@pytest.mark.parametrize("ice_tcp", [False, True], ids=["udp", "ice-tcp-edge"])
async def test_the_reference_client_calls_from_another_origin_with_trickle_and_an_ice_restart(ice_tcp: bool) -> None:
    runner, origin = await app_origin()
    options = {"api_keys": f"app:{API_KEY}", "cors_origins": origin} | ({"relay_tcp": "127.0.0.1:0"} if ice_tcp else {})
    try:
        async with embedded_mesh(edge_options=options) as mesh:
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


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class TwoNetworks:
    """A network namespace for the browser with two links to this host, as a phone with Wi-Fi and cellular:
    link A (the host at ``a_host``, the browser at ``a_browser``) is the default route; ``move()`` takes
    the browser's address on A away and routes it over link B (``b_browser``). Names start with ``whip``."""

    def __init__(self) -> None:
        self.name = f"whip{secrets.token_hex(3)}"
        octet = secrets.randbelow(200) + 20
        self.a_host, self.a_browser = f"10.213.{octet}.1", f"10.213.{octet}.2"
        self.b_host, self.b_browser = f"10.214.{octet}.1", f"10.214.{octet}.2"

    def __enter__(self) -> TwoNetworks:
        ip("netns", "add", self.name)
        try:
            ip("-n", self.name, "link", "set", "lo", "up")
            for link, host, browser in (("a", self.a_host, self.a_browser), ("b", self.b_host, self.b_browser)):
                outside, inside = f"{self.name}{link}", f"{self.name}{link}0"
                ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", self.name)
                ip("addr", "add", f"{host}/30", "dev", outside)
                ip("link", "set", outside, "up")
                ip("-n", self.name, "addr", "add", f"{browser}/30", "dev", inside)
                ip("-n", self.name, "link", "set", inside, "up")
            ip("-n", self.name, "route", "add", "default", "via", self.a_host)
        except BaseException:
            self.__exit__()
            raise
        return self

    def move(self) -> None:
        ip("-n", self.name, "route", "replace", "default", "via", self.b_host)
        ip("-n", self.name, "addr", "del", f"{self.a_browser}/30", "dev", f"{self.name}a0")

    def __exit__(self, *_exc: object) -> None:
        """Kill what still runs in the namespace (Chromium's helpers), delete the links and the namespace."""
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
        for link in ("a", "b"):
            subprocess.run(["ip", "link", "del", f"{self.name}{link}"], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2")
async def test_a_browser_that_changes_networks_keeps_its_call_with_an_ice_restart() -> None:
    connected, moved, result = asyncio.Event(), asyncio.Event(), asyncio.get_running_loop().create_future()

    async def on_connected(_request: web.Request) -> web.Response:
        connected.set()
        return web.Response()

    async def on_moved(_request: web.Request) -> web.Response:
        return web.Response(text="yes" if moved.is_set() else "no")

    async def on_result(request: web.Request) -> web.Response:
        if not result.done():
            result.set_result(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/connected", on_connected)
    app.router.add_get("/moved", on_moved)
    app.router.add_post("/result", on_result)
    with TwoNetworks() as net, tempfile.TemporaryDirectory(prefix="whip-chromium-", ignore_cleanup_errors=True) as tmp:
        runner, origin = await app_origin(net.a_host, app)
        try:
            async with embedded_mesh(edge_options={"api_keys": f"app:{API_KEY}", "cors_origins": origin,
                                                   "public": f"{net.a_host}:0", "http": f"{net.a_host}:0"}) as mesh:
                page = URL(f"{origin}/page.html").with_query(
                    whip=mesh.whip_url, token=await client_token(mesh.edge.url, origin), seconds="2", sync="1")
                capture = Path(tmp) / "capture-48k.wav"
                audio.write_wav(str(capture), audio.load_wav_mono(bundled_speech(), 48000), 48000)
                browser = await asyncio.create_subprocess_exec(
                    "ip", "netns", "exec", net.name, CHROMIUM, *FLAGS, f"--user-data-dir={tmp}/profile",
                    f"--use-file-for-fake-audio-capture={capture}", f"--unsafely-treat-insecure-origin-as-secure={origin}",
                    str(page), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL)
                try:
                    async with asyncio.timeout(60):
                        await connected.wait()
                        net.move()
                        moved.set()
                        outcome = await result
                finally:
                    browser.terminate()
                    await browser.wait()

                assert outcome["ok"], outcome
                before, after = outcome["paths"]
                assert before.startswith(net.a_browser + ":") and after.startswith(net.b_browser + ":"), outcome
                assert outcome["after"] - outcome["during"] > 50, "the echo kept coming over the new network"
                assert ("PATCH", 200) in [(r["method"], r["status"]) for r in outcome["requests"]]
                assert mesh.transceiver.mux.core.events["rekeyed"] == 1
                assert outcome["requests"][-1]["method"] == "DELETE" and outcome["requests"][-1]["status"] == 200
        finally:
            await runner.cleanup()
