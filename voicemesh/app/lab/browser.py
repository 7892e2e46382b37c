"""One call from headless Chromium (Debian's ``chromium``) with the browser's own WebRTC stack.

Chromium loads an edge's page (edge/static/call.html) with a WAV as its fake microphone; the page
calls through the mesh and leaves its getStats() figures in ``window.result``, which is read here
over the DevTools protocol (Runtime.evaluate on the page's WebSocket); it can also take a screenshot of the
page during the call (Page.captureScreenshot). Run as
``python -m voicemesh.app.lab.browser URL --wav W [--seconds S] [--screenshot PNG]``: the result as one JSON
line. With an
API key in ``VOICEMESH_APP_API_KEY`` it first plays the app's backend: it gets a client token bound to the
page's origin (``POST /v1/client_secrets``) and gives it to the page as ``?token=``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path

import aiohttp
from yarl import URL

from voicemesh.app import audio

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0",
)
"""Headless, no sandbox (root), no traffic of its own, fake devices granted without asking, and a
DevTools port that Chromium picks and writes to DevToolsActivePort in the profile."""
POLL_S = 0.25
IN_CALL = ("Boolean(window.result) || Boolean(window.live && window.live.phase === 'connected' && window.live.stats"
           " && window.live.stats.rtt_ms !== null && window.live.setup_ms.first_audio !== undefined)")
"""True once the page's call is up with audio back and a round trip measured (or the call is over)."""
READY = "document.readyState === 'complete' && Boolean(document.getElementById('call'))"
"""True once the call page has loaded (not the blank page before it)."""
SETTLE_S = 1.5
"""Seconds after IN_CALL before the screenshot, for the level meters, the live figures and events to fill."""


class BrowserError(Exception):
    """Chromium did not produce a result; ``reason``: "no_devtools" (it exited or never opened its
    DevTools port), "no_page" (no page target), "timeout"."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def client_token(page_url: str, api_key: str) -> str:
    """A client token from the page's edge for a page on that edge's origin, as an app's backend gets one
    (README "Security"). Raises aiohttp.ClientError if the edge refuses."""
    origin = URL(page_url).origin()
    async with aiohttp.ClientSession(raise_for_status=True) as http, http.post(
            origin / "v1/client_secrets", json={"origin": str(origin)},
            headers={"Authorization": f"Bearer {api_key}"}) as resp:
        return (await resp.json())["value"]


async def browser_call(page_url: str, wav: str, seconds: float = 10.0, chromium: str = CHROMIUM,
                       timeout_s: float = 60.0, api_key: str = "", screenshot: Path | None = None,
                       press: bool = False) -> dict:
    """Open ``page_url`` (an edge's call page) in headless Chromium speaking ``wav``, and return the
    page's ``window.result`` (its shape is documented in edge/static/call.html) after a call of
    ``seconds``.

    ``page_url``'s origin is treated as secure, so plain HTTP may use the microphone. With ``api_key``
    the page calls with a client token (``client_token``). With ``screenshot`` the whole page is written there
    as PNG during the call (SETTLE_S after IN_CALL; ``seconds`` must leave time for it). With ``press`` the
    call is made as a person makes it: the page is loaded without ``?seconds=``, its Call button pressed, and
    its Hang up button ``seconds`` later. Raises BrowserError if Chromium gives no result within
    ``seconds + timeout_s``; FileNotFoundError or audio.BadAudio if ``wav`` cannot be read;
    aiohttp.ClientError if no client token can be had.
    """
    url = URL(page_url) if press else URL(page_url).update_query(seconds=f"{seconds:g}")
    if api_key:
        url = url.update_query(token=await client_token(page_url, api_key))
    # Chromium's helper processes can outlive the browser process for a moment, still writing to the
    # profile: a cleanup error must not turn a finished call into a failure.
    with tempfile.TemporaryDirectory(prefix="vmlab-chromium-", ignore_cleanup_errors=True) as tmp:
        capture, profile = Path(tmp) / "capture-48k.wav", Path(tmp) / "profile"
        audio.write_wav(str(capture), audio.load_wav_mono(wav, 48000), 48000)
        log = Path(tmp) / "chromium.log"
        with open(log, "wb") as fh:
            proc = await asyncio.create_subprocess_exec(
                chromium, *FLAGS, f"--user-data-dir={profile}", f"--use-file-for-fake-audio-capture={capture}",
                f"--unsafely-treat-insecure-origin-as-secure={url.origin()}", str(url),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=fh)
        try:
            async with asyncio.timeout(seconds + timeout_s):
                port = await _devtools_port(profile, proc, log)
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                        targets = await resp.json()
                    page = next((t for t in targets if t.get("type") == "page"), None)
                    if page is None:
                        raise BrowserError("no_page", f"Chromium has no page target: {targets}")
                    async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                        ids = itertools.count(1)
                        loop = asyncio.get_running_loop()
                        if press:
                            while not await _evaluate(ws, next(ids), READY):
                                await asyncio.sleep(POLL_S)
                            await _press(ws, next(ids), "call")
                            hang_up_at = loop.time() + seconds
                        if screenshot is not None:
                            while not await _evaluate(ws, next(ids), IN_CALL):
                                await asyncio.sleep(POLL_S)
                            await asyncio.sleep(SETTLE_S)
                            screenshot.write_bytes(await _screenshot(ws, ids))
                        if press:
                            await asyncio.sleep(max(0.0, hang_up_at - loop.time()))
                            await _press(ws, next(ids), "hangup")
                        while (result := await _evaluate(ws, next(ids), "window.result")) is None:
                            await asyncio.sleep(POLL_S)
                        return result
        except TimeoutError:
            raise BrowserError("timeout", f"no result from the page within {seconds + timeout_s:g} s") from None
        finally:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()


async def _devtools_port(profile: Path, proc: asyncio.subprocess.Process, log: Path) -> int:
    """The port Chromium wrote to DevToolsActivePort (first line)."""
    active = profile / "DevToolsActivePort"
    while True:
        if proc.returncode is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise BrowserError("no_devtools", f"Chromium exited with {proc.returncode}: " + " | ".join(tail))
        lines = active.read_text().splitlines() if active.exists() else []
        if lines and lines[0].isdigit():
            return int(lines[0])
        await asyncio.sleep(0.05)


async def _command(ws: aiohttp.ClientWebSocketResponse, message_id: int, method: str, params: dict) -> dict:
    """The ``result`` of one DevTools protocol command on the page."""
    await ws.send_json({"id": message_id, "method": method, "params": params})
    async for message in ws:
        reply = json.loads(message.data)
        if reply.get("id") == message_id:
            return reply.get("result", {})
    raise BrowserError("no_devtools", "the DevTools connection closed")


async def _evaluate(ws: aiohttp.ClientWebSocketResponse, message_id: int, expression: str):
    """The JSON value of ``expression`` in the page (Runtime.evaluate), None if undefined."""
    reply = await _command(ws, message_id, "Runtime.evaluate", {"expression": expression, "returnByValue": True})
    return reply.get("result", {}).get("value")


async def _press(ws: aiohttp.ClientWebSocketResponse, message_id: int, button: str) -> None:
    """Press the page's button with id ``button``, as a user gesture (so the page may start audio)."""
    await _command(ws, message_id, "Runtime.evaluate", {
        "expression": f"document.getElementById({json.dumps(button)}).click()", "userGesture": True})


async def _screenshot(ws: aiohttp.ClientWebSocketResponse, ids: itertools.count) -> bytes:
    """The whole page (its content size, beyond the viewport) as PNG bytes."""
    size = (await _command(ws, next(ids), "Page.getLayoutMetrics", {}))["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = await _command(ws, next(ids), "Page.captureScreenshot",
                          {"format": "png", "captureBeyondViewport": True, "clip": clip})
    return base64.b64decode(shot["data"])


def main(argv: list[str] | None = None) -> int:
    """``python -m voicemesh.app.lab.browser URL --wav W [--seconds S] [--screenshot PNG]``: print the result as one JSON line;
    exit status 0 if the page's call was ok."""
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("url", help="the edge's call page, e.g. http://rtc.voicemesh.test/")
    args.add_argument("--wav", required=True, help="the fake microphone's audio")
    args.add_argument("--seconds", type=float, default=10.0, help="call length in seconds")
    args.add_argument("--screenshot", type=Path, help="write a PNG of the page during the call here")
    opts = args.parse_args(argv)
    try:
        result = asyncio.run(browser_call(opts.url, opts.wav, opts.seconds, screenshot=opts.screenshot,
                                          api_key=os.environ.get("VOICEMESH_APP_API_KEY", "")))
    except BrowserError as exc:
        result = {"ok": False, "error": f"{exc.reason}: {exc}"}
    except aiohttp.ClientError as exc:
        result = {"ok": False, "error": f"no client token: {exc}"}
    print(json.dumps(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
