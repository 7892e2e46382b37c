"""The transceiver API (core/api.py) takes only requests an edge signed (voicemesh/wire/hopauth.py): unsigned,
tampered, stale and replayed ones get 401, over real HTTP to a real transceiver."""

from __future__ import annotations

import time

import aiohttp
import pytest
from offers import real_offer

from voicemesh.app.demo import embedded_mesh
from voicemesh.wire.hopauth import SIGNATURE, HopRequest, HopSigner
from voicemesh.wire.meshkeys import MeshKeys
from voicemesh.wire.signaling import CLIENT_ADDRESS, EDGE_ID, RELAY_ADDRESS

pytestmark = pytest.mark.integration



def hop_headers(mesh) -> dict[str, str]:
    return {"Content-Type": "application/sdp", EDGE_ID: str(mesh.edge.record.index),
            RELAY_ADDRESS: mesh.edge.record.public_relay, CLIENT_ADDRESS: "198.51.100.7"}


def signed(keys: MeshKeys, method: str, path: str, trx: str, body: bytes, headers: dict, now: float) -> dict[str, str]:
    request = HopRequest.from_headers(method, path, trx, body, headers)
    return headers | {SIGNATURE: HopSigner(keys).sign(request, now)}


async def test_only_signed_requests_open_and_end_sessions() -> None:
    async with embedded_mesh() as mesh, aiohttp.ClientSession() as http:
        base, trx = mesh.transceiver.record.http, mesh.transceiver.config.node_id
        sdp = (await real_offer()).encode()
        headers = hop_headers(mesh)

        async with http.post(f"{base}/v1/sessions", data=sdp, headers=headers) as resp:
            assert resp.status == 401 and (await resp.json(content_type=None))["title"] == "bad-hop-signature"

        good = signed(mesh.keys, "POST", "/v1/sessions", trx, sdp, headers, time.time())
        tampered = good | {RELAY_ADDRESS: "192.0.2.66:3478"}
        async with http.post(f"{base}/v1/sessions", data=sdp, headers=tampered) as resp:
            assert resp.status == 401
        async with http.post(f"{base}/v1/sessions", data=sdp, headers=good) as resp:
            assert resp.status == 201
            location = resp.headers["Location"]
        async with http.post(f"{base}/v1/sessions", data=sdp, headers=good) as resp:
            assert resp.status == 401 and "replayed" in (await resp.json(content_type=None))["detail"]
        stale = signed(mesh.keys, "POST", "/v1/sessions", trx, sdp, headers, time.time() - 120)
        async with http.post(f"{base}/v1/sessions", data=sdp, headers=stale) as resp:
            assert resp.status == 401
        other_mesh = signed(MeshKeys({1: b"x" * 32}, 1), "POST", "/v1/sessions", trx, sdp, headers, time.time())
        async with http.post(f"{base}/v1/sessions", data=sdp, headers=other_mesh) as resp:
            assert resp.status == 401
        assert len(mesh.transceiver.sessions) == 1

        async with http.delete(base + location) as resp:
            assert resp.status == 401
        other_path = signed(mesh.keys, "DELETE", "/v1/sessions/other", trx, b"", {}, time.time())
        async with http.delete(base + location, headers=other_path) as resp:
            assert resp.status == 401
        async with http.delete(base + location, headers=signed(mesh.keys, "DELETE", location, trx, b"", {},
                                                                   time.time())) as resp:
            assert resp.status == 200
        assert mesh.transceiver.sessions == {}

        async with http.get(f"{base}/v1/status") as resp:
            assert resp.status == 200, "the status is read-only and stays open on the backbone"
            assert (await resp.json())["hop_refused"] == {"missing": 2, "mac": 3, "replayed": 1, "stale": 1}


async def test_a_signature_for_another_transceiver_is_refused() -> None:
    async with embedded_mesh() as mesh, aiohttp.ClientSession() as http:
        sdp = (await real_offer()).encode()
        elsewhere = signed(mesh.keys, "POST", "/v1/sessions", "trx-other", sdp, hop_headers(mesh), time.time())
        async with http.post(f"{mesh.transceiver.record.http}/v1/sessions", data=sdp, headers=elsewhere) as resp:
            assert resp.status == 401


async def test_a_session_configuration_is_signed_with_the_offer_and_reaches_the_session() -> None:
    from voicemesh.runtime.http import CallOffer, encode_call

    async with embedded_mesh() as mesh, aiohttp.ClientSession() as http:
        base, trx = mesh.transceiver.record.http, mesh.transceiver.config.node_id
        body, content_type = encode_call(CallOffer(await real_offer(), '{"instructions":"hi"}'))
        headers = hop_headers(mesh) | {"Content-Type": content_type}
        good = signed(mesh.keys, "POST", "/v1/sessions", trx, body, headers, time.time())
        swapped = body.replace(b'"hi"', b'"ho"')
        async with http.post(f"{base}/v1/sessions", data=swapped, headers=good) as resp:
            assert resp.status == 401, "the session configuration is part of the signed body"
        async with http.post(f"{base}/v1/sessions", data=b'{"sdp": "v=0"}', headers=signed(
                mesh.keys, "POST", "/v1/sessions", trx, b'{"sdp": "v=0"}', headers, time.time())) as resp:
            assert (resp.status, (await resp.json(content_type=None))["title"]) == (400, "malformed-call")
        async with http.post(f"{base}/v1/sessions", data=body, headers=good) as resp:
            assert resp.status == 201
        [session] = mesh.transceiver.sessions.values()
        assert session.session_config == '{"instructions":"hi"}'
