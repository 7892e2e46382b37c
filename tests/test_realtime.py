"""The OpenAI Realtime-compatible endpoint (README "OpenAI Realtime compatibility"), in process over real
HTTP, UDP, gRPC and aiortc: ``POST /v1/realtime/calls`` on the edge, the ``oai-events`` data channel through
the relay and the mux, the transceiver's speech events, and the example agent speaking for
``response.create``."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from multidict import CIMultiDict

from voicemesh.app import audio
from voicemesh.app.demo import embedded_mesh
from voicemesh.core.realtime_agent import RealtimeAgent

pytestmark = pytest.mark.integration

API_KEY = "sk-realtime-" + "7" * 24
DEADLINE_S = 30.0


def speaking_agent() -> RealtimeAgent:
    clip = audio.load_wav_mono(audio.bundled_speech(), 16000).astype("<i2").tobytes()
    return RealtimeAgent(clip, 16000, audio.BUNDLED_SPEECH_TEXT)


async def wait_for(predicate, deadline_s: float = DEADLINE_S) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not predicate():
        assert loop.time() < end, "condition not reached before the deadline"
        await asyncio.sleep(0.02)


class RealtimeCaller:
    """An app's side of a Realtime WebRTC call, as OpenAI's guide has it: microphone track, ``oai-events``
    data channel, offer POSTed to /v1/realtime/calls, answer set; events received kept in ``events``."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.player = MediaPlayer(audio.bundled_speech(), loop=True)
        self.pc.addTrack(self.player.audio)
        self.channel = self.pc.createDataChannel("oai-events")
        self.events: list[dict] = []
        self.channel.on("message", lambda message: self.events.append(json.loads(message)))
        self.frames_back = 0
        self.pc.on("track", lambda track: asyncio.ensure_future(self._count(track)))

    async def _count(self, track) -> None:
        while True:
            try:
                await track.recv()
            except Exception:
                return
            self.frames_back += 1

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def types(self) -> list[str]:
        return [event["type"] for event in self.events]

    async def close(self) -> None:
        self.player.audio.stop()
        await self.pc.close()


async def test_a_realtime_call_exchanges_events_on_oai_events_and_speaks_for_response_create() -> None:
    agent = speaking_agent()
    async with embedded_mesh(agent=agent, edge_options={"api_keys": f"app:{API_KEY}"}) as mesh:
        caller = RealtimeCaller()
        try:
            form = aiohttp.FormData(default_to_multipart=True)
            form.add_field("sdp", await caller.offer(), content_type="application/sdp")
            # The caller speaks a looped clip: without interrupt_response false its speech could cancel the
            # response (barge-in) whenever the loop comes round during it.
            form.add_field("session", json.dumps({
                "type": "realtime", "instructions": "Be brief.",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}}}),
                content_type="application/json")
            async with aiohttp.ClientSession() as http, http.post(
                    f"{mesh.edge.url}/v1/realtime/calls", data=form,
                    headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
                assert resp.status == 201, await resp.text()
                location = resp.headers["Location"]
                await caller.answer(await resp.text())
            assert location.startswith("/v1/realtime/calls/")

            await wait_for(lambda: "session.created" in caller.types())
            created = next(e for e in caller.events if e["type"] == "session.created")
            assert created["session"]["instructions"] == "Be brief.", "the session part reached the agent"

            caller.channel.send(json.dumps({"type": "response.create", "event_id": "evt_1"}))
            await wait_for(lambda: "response.done" in caller.types())
            types = caller.types()
            assert types.index("response.created") < types.index("response.output_audio_transcript.delta") \
                < types.index("response.output_audio_transcript.done") < types.index("response.done")
            done = next(e for e in caller.events if e["type"] == "response.done")
            assert done["response"]["status"] == "completed"
            transcript = next(e for e in caller.events if e["type"] == "response.output_audio_transcript.done")
            assert transcript["transcript"] == audio.BUNDLED_SPEECH_TEXT
            assert caller.frames_back > 200, "the spoken clip came back as audio"
            await wait_for(lambda: "input_audio_buffer.speech_started" in caller.types())
            started = next(e for e in caller.events if e["type"] == "input_audio_buffer.speech_started")
            assert started["item_id"].startswith("item_") and started["audio_start_ms"] >= 0

            caller.channel.send("{not json")
            await wait_for(lambda: "error" in caller.types())
            error = next(e for e in caller.events if e["type"] == "error")
            assert error["error"]["code"] == "not_json"
            assert agent.received["response.create"] == 1
            counters = mesh.transceiver.realtime_counters
            assert counters["channels"] == 1 and counters["dropped_caller_not_json"] == 1

            async with aiohttp.ClientSession() as http, http.delete(
                    f"{mesh.edge.url}{location}", headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
                assert resp.status == 200
            await wait_for(lambda: not mesh.transceiver.sessions)
        finally:
            await caller.close()


def form(*parts: tuple[str, str]) -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in parts:
        data.add_field(name, value)
    return data


async def post_call(url: str, data, headers: dict | None = None) -> tuple[int, CIMultiDict, str]:
    async with aiohttp.ClientSession() as http, http.post(f"{url}/v1/realtime/calls", data=data,
                                                          headers=headers or {}) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.text()


async def edge_counters(url: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/status") as resp:
        return (await resp.json())["whip"]


async def test_realtime_call_bodies_are_checked_before_anything_is_forwarded() -> None:
    from offers import real_offer

    sdp = await real_offer()
    session = json.dumps({"type": "realtime"})
    refused = [
        (b"v=0", {"Content-Type": "text/plain"}, 415, "unsupported-media-type"),
        (form(("sdp", sdp), ("model", "gpt-realtime")), None, 400, "malformed-multipart"),
        (form(("sdp", sdp), ("sdp", sdp)), None, 400, "malformed-multipart"),
        (form(("session", session)), None, 400, "malformed-multipart"),
        (b"--x\r\n", {"Content-Type": "multipart/form-data"}, 400, "malformed-multipart"),
        (form(("sdp", sdp), ("session", "[1, 2]")), None, 400, "malformed-session"),
        (form(("sdp", sdp), ("session", "{")), None, 400, "malformed-session"),
        (form(("sdp", sdp), ("session", json.dumps({"instructions": "x" * 17000}))), None, 413, "session-too-large"),
        (form(("sdp", sdp + "a=x:" + "y" * 70000 + "\r\n")), None, 413, "offer-too-large"),
        (form(("sdp", "hello")), None, 400, "malformed-sdp"),
    ]
    async with embedded_mesh(edge_options={"whip_rate_per_s": 100.0, "whip_burst": 100}) as mesh:
        for body, headers, status, title in refused:
            got, _, text = await post_call(mesh.edge.url, body, headers)
            assert (got, json.loads(text)["title"]) == (status, title), text
        assert mesh.transceiver.sessions == {}
        counters = await edge_counters(mesh.edge.url)
        assert (counters["call_malformed_multipart"], counters["call_malformed_session"],
                counters["call_unsupported_media_type"], counters["call_session_too_large"],
                counters["call_offer_too_large"]) == (4, 2, 1, 1, 1)

        status, headers, _ = await post_call(mesh.edge.url, sdp, {"Content-Type": "application/sdp"})
        assert status == 201 and headers["Location"].startswith("/v1/realtime/calls/")
        assert len(mesh.transceiver.sessions) == 1
        [live] = mesh.transceiver.sessions.values()
        assert live.session_config == ""


async def test_realtime_calls_take_whips_authorization_and_admission() -> None:
    from offers import real_offer

    options = {"api_keys": f"app:{API_KEY}", "whip_rate_per_s": 0.01, "whip_burst": 3}
    async with embedded_mesh(edge_options=options) as mesh:
        status, headers, text = await post_call(mesh.edge.url, await real_offer(), {"Content-Type": "application/sdp"})
        assert (status, json.loads(text)["title"]) == (401, "unauthorized") and "Bearer" in headers["WWW-Authenticate"]
        bearer = {"Authorization": f"Bearer {API_KEY}"}
        status, _, _ = await post_call(mesh.edge.url, form(("sdp", await real_offer()), ("session", "{}")), bearer)
        assert status == 201
        async with aiohttp.ClientSession() as http, http.post(mesh.whip_url, data=b"v=0", headers={
                "Content-Type": "text/plain", **bearer}) as resp:
            assert resp.status == 415
        status, headers, text = await post_call(mesh.edge.url, b"v=0", {"Content-Type": "text/plain", **bearer})
        assert (status, json.loads(text)["title"]) == (429, "rate-limited"), "one rate for both offer paths"
        counters = await edge_counters(mesh.edge.url)
        assert counters["unauthorized_missing"] == 1 and counters["rate_limited"] == 1


async def test_json_events_keep_their_place_both_ways_and_old_agents_never_see_one(links) -> None:
    from voicemesh.agent import sdk
    from voicemesh.agent.v1 import agent_pb2

    class Replier(sdk.Agent):
        json_events = True

        def __init__(self) -> None:
            super().__init__()
            self.heard: dict[str, list] = {}
            self.configs: list = []

        async def on_session(self, session):
            self.configs.append(session.config)
            heard = self.heard.setdefault(session.session_id, [])
            async for item in session:
                heard.append(item if isinstance(item, dict) else item.payload)
                if isinstance(item, dict):
                    await session.send_audio(b"a")
                    session.send_json({"type": "reply", "to": item["type"]})
                    await session.send_audio(b"b")

    class Old(sdk.Agent):
        def __init__(self) -> None:
            super().__init__()
            self.heard: list = []

        async def on_session(self, session):
            async for item in session:
                self.heard.append(item)

    servers = []
    try:
        got: dict[str, list] = {"new": [], "old": []}
        sessions = {}
        links_by_name = {}
        agents = {"new": Replier(), "old": Old()}
        for name, agent in agents.items():
            server, port = await sdk.serve(agent)
            servers.append(server)
            link = links_by_name[name] = await links(port)
            await wait_for(lambda link=link: link.connected)
            sessions[name] = link.open_session(
                name, codec=agent_pb2.CODEC_OPUS, sample_rate_hz=48000,
                on_frame=lambda payload, _ts, name=name: got[name].append(payload),
                on_end=lambda _reason: None, on_json=lambda text, name=name: got[name].append(json.loads(text)),
                session_config='{"voice": "marin"}')
            sessions[name].send(b"f0", 0)
            sessions[name].send_json('{"type": "response.create"}')
            sessions[name].send(b"f1", 960)
        new_link = links_by_name["new"]
        deaf = new_link.open_session("deaf", codec=agent_pb2.CODEC_OPUS, sample_rate_hz=48000,
                                     on_frame=lambda payload, _ts: None, on_end=lambda _reason: None)
        deaf.send_json('{"type": "response.create"}')
        await wait_for(lambda: len(got["new"]) == 3 and len(agents["old"].heard) == 2)
        await wait_for(lambda: new_link.dropped_downlink_json == 1)
        assert agents["new"].heard["new"] == [b"f0", {"type": "response.create"}, b"f1"]
        assert got["new"] == [b"a", {"type": "reply", "to": "response.create"}, b"b"]
        assert agents["new"].configs[0] == {"voice": "marin"}
        assert [frame.payload for frame in agents["old"].heard] == [b"f0", b"f1"]
        assert agents["old"].dropped_json_events == 1
    finally:
        for server in servers:
            await server.stop(None)


async def test_an_apps_backend_gets_its_ephemeral_key_under_openais_name_too() -> None:
    async with embedded_mesh(edge_options={"api_keys": f"app:{API_KEY}"}) as mesh:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{mesh.edge.url}/v1/realtime/client_secrets", json={
                    "session": {"type": "realtime"}, "expires_after": {"anchor": "created_at", "seconds": 60}},
                    headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
                assert resp.status == 200
                secret = await resp.json()
            assert set(secret) == {"value", "expires_at"}
            async with http.post(f"{mesh.edge.url}/v1/realtime/client_secrets", json={}) as resp:
                assert resp.status == 401, "an API key only, as at /v1/client_secrets"
        from offers import real_offer

        status, _, _ = await post_call(mesh.edge.url, await real_offer(), {
            "Content-Type": "application/sdp", "Authorization": f"Bearer {secret['value']}"})
        assert status == 201


async def test_the_edge_serves_the_realtime_example_page() -> None:
    async with embedded_mesh() as mesh, aiohttp.ClientSession() as http, http.get(f"{mesh.edge.url}/realtime") as resp:
        page = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/html"
    assert 'createDataChannel("oai-events")' in page and "`${baseUrl}/v1/realtime/calls`" in page
    assert '"Content-Type": "application/sdp"' in page and "window.result" in page


async def test_a_page_on_an_allowed_origin_may_call_the_realtime_endpoint() -> None:
    from offers import real_offer

    origin = "https://app.example.com"
    async with embedded_mesh(edge_options={"cors_origins": origin}) as mesh, aiohttp.ClientSession() as http:
        async with http.options(f"{mesh.edge.url}/v1/realtime/calls", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"}) as resp:
            assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == origin
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        status, headers, _ = await post_call(mesh.edge.url, await real_offer(),
                                             {"Content-Type": "application/sdp", "Origin": origin})
        assert status == 201 and headers["Access-Control-Allow-Origin"] == origin
        assert "Location" in headers["Access-Control-Expose-Headers"] and headers.get("ETag")
        status, headers, _ = await post_call(mesh.edge.url, await real_offer(),
                                             {"Content-Type": "application/sdp", "Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in headers
