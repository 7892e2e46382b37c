"""Admission at the edge's WHIP front: the next transceiver when one is full, per-source rate limits (offers;
PATCH, DELETE and OPTIONS), per-session bounds on PATCH, made-up session ids, the cap on offers in flight, and
SDP limits, against the embedded mesh (real HTTP, real aiortc offers)."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import socket
from dataclasses import replace

import aiohttp
import pytest
from offers import real_offer

from voicemesh.app.demo import LOOPBACK, embedded_mesh
from voicemesh.core import api
from voicemesh.core.config import TransceiverConfig
from voicemesh.core.transceiver import Transceiver
from voicemesh.registry import MemoryRegistry
from voicemesh.wire.hopauth import HopVerifier
from voicemesh.wire.signaling import MAX_OFFER_BYTES, SDP_TYPE, TRICKLE_TYPE

pytestmark = pytest.mark.integration



async def post(url: str, body: str, content_type: str = SDP_TYPE, headers: dict | None = None):
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers={"Content-Type": content_type, **(headers or {})}) as resp:
            return resp.status, resp.headers, await resp.json(content_type=None) if resp.status >= 400 else None


async def whip_status(mesh) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"{mesh.edge.url}/v1/status") as resp:
        return await resp.json()


async def test_a_full_transceiver_passes_the_offer_to_the_next() -> None:
    async with embedded_mesh(capacity=0) as mesh:
        full = mesh.transceiver
        # The edge's view says the full transceiver has room (a stale load), so it is tried first.
        await full.registry.register(replace(full.record, capacity=10))
        status, headers, problem = await post(mesh.whip_url, await real_offer())
        assert (status, problem["title"]) == (503, "no-capacity") and int(headers["Retry-After"]) > 0
        assert (await whip_status(mesh))["whip"] == {"pending": 0, "transceiver_refused": 1, "no_capacity": 1}

        registry = MemoryRegistry(full.registry.store)
        await registry.start()
        # Farther from the edge than the full one (Sydney), so the full one is still tried first whatever the
        # load the edge counts for it (its stale record and the offer it just sent it: RecentForwards).
        spare = Transceiver(TransceiverConfig(node_id="trx-spare", agent=full.config.agent, backbone=f"{LOOPBACK}:0",
                                              capacity=5, drain_timeout_s=0, lat=-33.87, lon=151.21),
                            registry, mesh.tokens)
        runner = await api.serve(spare, HopVerifier(mesh.keys), LOOPBACK, 0)
        try:
            status, headers, _ = await post(mesh.whip_url, await real_offer())
            assert status == 201 and headers["Location"].startswith("/v1/sessions/")
            assert len(spare.sessions) == 1 and full.sessions == {}
            assert (await whip_status(mesh))["whip"]["transceiver_refused"] == 2
        finally:
            await runner.cleanup()
            await spare.close()
            await registry.close()


async def test_a_source_over_its_rate_gets_429_with_retry_after() -> None:
    async with embedded_mesh(edge_options={"whip_rate_per_s": 0.01, "whip_burst": 2}) as mesh:
        assert [(await post(mesh.whip_url, "v=0", "text/plain"))[0] for _ in range(2)] == [415, 415]
        status, headers, problem = await post(mesh.whip_url, "v=0", "text/plain")
        assert (status, problem["title"], problem["status"]) == (429, "rate-limited", 429) and problem["detail"]
        assert int(headers["Retry-After"]) > 1
        # Behind a TLS front on loopback the source is the X-Forwarded-For address: another caller.
        other = {"X-Forwarded-For": "2001:db8:7::1"}
        assert (await post(mesh.whip_url, "v=0", "text/plain", other))[0] == 415
        other_in_the_same_64 = {"X-Forwarded-For": "2001:db8:7::2"}
        assert (await post(mesh.whip_url, "v=0", "text/plain", other_in_the_same_64))[0] == 415
        assert (await post(mesh.whip_url, "v=0", "text/plain", other_in_the_same_64))[0] == 429
        assert (await whip_status(mesh))["whip"]["rate_limited"] == 2


async def test_offers_in_flight_are_capped() -> None:
    async with embedded_mesh(edge_options={"whip_max_pending": 1}) as mesh:
        host, port = mesh.edge.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v1/sessions HTTP/1.1\r\nHost: edge\r\nContent-Type: application/sdp\r\n"
                     b"Content-Length: 4000\r\n\r\nv=0\r\n")
        await writer.drain()
        while (await whip_status(mesh))["whip"]["pending"] != 1:
            await asyncio.sleep(0.02)
        status, headers, problem = await post(mesh.whip_url, await real_offer())
        assert (status, problem["title"]) == (503, "pending-full") and int(headers["Retry-After"]) > 0
        writer.close()
        while (await whip_status(mesh))["whip"]["pending"] != 0:
            await asyncio.sleep(0.02)
        status, _, _ = await post(mesh.whip_url, await real_offer())
        assert status == 201
        assert (await whip_status(mesh))["whip"]["pending_full"] == 1


def many_audio_m_lines(sdp: str, count: int) -> str:
    """The issue's offer: ``sdp`` with ``count`` BUNDLEd audio m-lines, the later ones as small as a valid
    BUNDLEd m-line gets (180 of them made 180 transceivers before the SDP limits)."""
    head, _, audio = sdp.partition("m=audio")
    lines = audio.splitlines(keepends=True)
    small = "".join(next(line for line in lines if line.startswith(prefix))
                    for prefix in ("c=", "a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:sha-256", "a=setup:"))
    small += "a=rtpmap:96 opus/48000/2\r\n"
    sections = ["m=audio" + audio] + [f"m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{i}\r\n{small}" for i in range(1, count)]
    return head.replace("a=group:BUNDLE 0", "a=group:BUNDLE " + " ".join(map(str, range(count)))) + "".join(sections)


async def test_an_offer_with_180_audio_m_lines_is_400_before_any_transceiver_is_made() -> None:
    huge = many_audio_m_lines(await real_offer(), 180)
    assert huge.count("m=audio") == 180 and len(huge) < MAX_OFFER_BYTES
    async with embedded_mesh() as mesh:
        status, _, problem = await post(mesh.whip_url, huge)
        assert (status, problem["title"]) == (400, "too-many-m-lines")
        assert "180 m-lines" in problem["detail"] and mesh.transceiver.sessions == {}


async def test_a_transceiver_that_takes_no_connection_passes_the_offer_on_and_is_tried_last() -> None:
    """A crashed transceiver's record stays in the view until its lease expires, and it answers nothing: the
    offer goes to the next transceiver, and later offers (callers re-dialling) try the dead one last."""
    silent = socket.socket()
    silent.bind((LOOPBACK, 0))
    silent.listen(0)
    filler = socket.create_connection(silent.getsockname())  # the accept queue is full: SYNs go unanswered
    async with embedded_mesh() as mesh:
        live = mesh.transceiver
        registry = MemoryRegistry(live.registry.store)
        await registry.start()
        # First in the choice order: as near, as loaded, and its node id sorts first.
        await registry.register(replace(live.record, node_id="a-crashed", index=live.record.index + 1,
                                        http=f"http://{LOOPBACK}:{silent.getsockname()[1]}"))
        try:
            for _ in range(2):
                status, _headers, _ = await post(mesh.whip_url, await real_offer())
                assert status == 201
            assert len(live.sessions) == 2
            assert (await whip_status(mesh))["whip"]["transceiver_unreachable"] == 1, "the second offer went " \
                "to the live transceiver first"
        finally:
            await registry.close()
            filler.close()
            silent.close()


def made_up_session_id() -> str:
    """An id of the right length and alphabet whose MAC no mesh key made (voicemesh/wire/sessionid.py)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(27)).decode()


def new_credentials() -> str:
    """A trickle-ice-sdpfrag body (RFC 8840) with ICE credentials no session has: with ``If-Match: *``, a
    restart."""
    return f"a=ice-ufrag:{secrets.token_hex(4)}\r\na=ice-pwd:{secrets.token_hex(16)}\r\n"


async def test_a_source_over_its_rate_of_patch_delete_and_options_gets_429(caplog) -> None:
    origin = "https://app.example"
    options = {"whip_request_rate_per_s": 0.01, "whip_request_burst": 3, "cors_origins": origin}
    async with embedded_mesh(edge_options=options) as mesh, aiohttp.ClientSession() as http:
        session_url = f"{mesh.whip_url}/{made_up_session_id()}"
        body = {"data": new_credentials(), "headers": {"Content-Type": TRICKLE_TYPE, "If-Match": "*"}}
        calls = [("OPTIONS", mesh.whip_url, {}), ("PATCH", session_url, body), ("DELETE", session_url, {})]
        for (method, url, kwargs), expected in zip(calls, (200, 404, 404), strict=True):
            async with http.request(method, url, **kwargs) as resp:
                assert resp.status == expected, method
        caplog.set_level(logging.WARNING, logger="voicemesh.whip")
        for method, url, kwargs in calls:
            headers = {"Origin": origin, **kwargs.get("headers", {})}
            async with http.request(method, url, **(kwargs | {"headers": headers})) as resp:
                problem = await resp.json(content_type="application/problem+json")
                assert (resp.status, problem["title"]) == (429, "rate-limited"), method
                assert int(resp.headers["Retry-After"]) > 1 and method in problem["detail"]
                assert resp.headers["Access-Control-Allow-Origin"] == origin, "a page can read the Retry-After"
        async with http.options(mesh.whip_url, headers={"X-Forwarded-For": "2001:db8:7::1"}) as resp:
            assert resp.status == 200, "another source has its own bucket"
        assert (await post(mesh.whip_url, "v=0", "text/plain"))[0] == 415, "offers have their own limit"
        assert (await whip_status(mesh))["whip"]["request_rate_limited"] == 3
        lines = [r for r in caplog.records if getattr(r, "reason", "") == "request_rate_limited"]
        assert len(lines) == 1, "refusals are logged at most once per interval"
        assert (lines[0].source, lines[0].method, lines[0].unwritten_since_last) == ("127.0.0.1", "OPTIONS", 0)


async def test_a_made_up_session_id_gets_404_without_a_registry_lookup(monkeypatch) -> None:
    async with embedded_mesh() as mesh, aiohttp.ClientSession() as http:
        registry = mesh.edge.registry
        looked_up: list[str] = []
        session_owner = registry.session_owner

        async def counted(session_id: str) -> str | None:
            looked_up.append(session_id)
            return await session_owner(session_id)

        monkeypatch.setattr(registry, "session_owner", counted)
        made_up = f"{mesh.whip_url}/{made_up_session_id()}"
        async with http.patch(made_up, data=new_credentials(),
                              headers={"Content-Type": TRICKLE_TYPE, "If-Match": "*"}) as resp:
            assert (resp.status, (await resp.json())["title"]) == (404, "no-such-session")
        async with http.delete(made_up) as resp:
            assert resp.status == 404
        assert looked_up == [], "a made-up id costs no look-up in any region's registry"
        status, headers, _ = await post(mesh.whip_url, await real_offer())
        async with http.delete(mesh.edge.url + headers["Location"]) as resp:
            assert resp.status == 200
        assert looked_up == [headers["Location"].rsplit("/", 1)[-1]]
        assert (await whip_status(mesh))["whip"]["unknown_session_id"] == 2


async def test_a_sessions_ice_restarts_and_patches_are_bounded_per_session() -> None:
    options = {"whip_session_restarts_per_min": 1, "whip_session_patches_per_min": 2}
    async with embedded_mesh(edge_options=options) as mesh, aiohttp.ClientSession() as http:
        urls = []
        for _ in range(2):
            status, headers, _ = await post(mesh.whip_url, await real_offer())
            assert status == 201
            urls.append(mesh.edge.url + headers["Location"])
        restart = {"data": new_credentials(), "headers": {"Content-Type": TRICKLE_TYPE, "If-Match": "*"}}
        trickle = {"data": new_credentials(), "headers": {"Content-Type": TRICKLE_TYPE}}

        async def patch(url: str, kwargs: dict) -> tuple[int, str, str]:
            async with http.patch(url, **kwargs) as resp:
                title = (await resp.json(content_type=None))["title"] if resp.status >= 400 else ""
                return resp.status, title, resp.headers.get("Retry-After", "")

        # Not connected yet: the owning transceiver refuses the restart (409), which still spent it.
        assert (await patch(urls[0], restart))[:2] == (409, "ice-not-connected")
        status, title, retry_after = await patch(urls[0], restart)
        assert (status, title) == (429, "ice-restart-rate-limited") and int(retry_after) > 1
        assert (await patch(urls[1], restart))[0] == 409, "another session has its own allowance"
        # Trickle has its own allowance: the owner's answers (428, no If-Match), then 429.
        assert [(await patch(urls[0], trickle))[0] for _ in range(2)] == [428, 428]
        status, title, retry_after = await patch(urls[0], trickle)
        assert (status, title) == (429, "patch-rate-limited") and int(retry_after) > 1
        whip = (await whip_status(mesh))["whip"]
        assert (whip["ice_restart_rate_limited"], whip["patch_rate_limited"]) == (1, 1)
        async with http.delete(urls[0]) as resp:
            assert resp.status == 200, "a DELETE is not a PATCH: the session still ends"
