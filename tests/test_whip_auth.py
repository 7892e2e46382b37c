"""Client tokens and API keys at a real edge's WHIP front (edge/whip.py): an app's backend exchanges its API
key at POST /v1/client_secrets, a caller opens one session with the token; expiry, replay, origin and region
binding, and key rotation, over real HTTP through a whole embedded mesh."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import aiohttp
import pytest
from offers import real_offer

from voicemesh.app.client import call
from voicemesh.app.demo import LOOPBACK, bundled_speech, embedded_mesh
from voicemesh.wire.clienttoken import ClientTokenCodec
from voicemesh.wire.meshkeys import MeshKeys

pytestmark = pytest.mark.integration

API_KEY = "sk-app-" + "7" * 24
OLD_API_KEY = "sk-old-" + "5" * 24
AUTH = {"api_keys": f"app:{API_KEY}"}
SDP = {"Content-Type": "application/sdp"}



async def client_secret(http: aiohttp.ClientSession, url: str, api_key: str = API_KEY, **body) -> tuple[int, dict]:
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {api_key}"}) as resp:
        return resp.status, await resp.json(content_type=None)


async def post_offer(http: aiohttp.ClientSession, url: str, token: str, sdp: str, **headers) -> tuple[int, dict, str]:
    async with http.post(url, data=sdp, headers=SDP | {"Authorization": f"Bearer {token}"} | headers) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def whip_counters(http: aiohttp.ClientSession, mesh) -> dict:
    async with http.get(f"{mesh.edge.url}/v1/status") as resp:
        return (await resp.json())["whip"]


async def test_a_call_through_the_mesh_with_a_client_token_and_the_token_opens_one_session_only(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with embedded_mesh(edge_options=AUTH) as mesh, aiohttp.ClientSession() as http:
        status, issued = await client_secret(http, mesh.secrets_url, ttl_s=30)
        assert status == 200 and issued["value"].startswith("vmct1_")
        assert 0 < issued["expires_at"] - time.time() <= 30

        report = await call(mesh.whip_url, bundled_speech(), bind=LOOPBACK,
                            headers={"Authorization": f"Bearer {issued['value']}"})
        assert report.ok and report.correlation is not None and report.correlation > 0.5, report.error
        assert mesh.transceiver.sessions == {}, "the DELETE with the same token ended the session"

        status, headers, body = await post_offer(http, mesh.whip_url, issued["value"], await real_offer())
        assert status == 401 and "one session" in body and headers["WWW-Authenticate"].startswith("Bearer")
        assert (await whip_counters(http, mesh))["unauthorized_replayed"] == 1
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert API_KEY not in logged and issued["value"] not in logged


async def test_client_secrets_take_only_an_api_key_and_a_valid_body() -> None:
    async with embedded_mesh(edge_options=AUTH) as mesh, aiohttp.ClientSession() as http:
        async with http.post(mesh.secrets_url) as resp:
            assert resp.status == 401
        assert (await client_secret(http, mesh.secrets_url, api_key="sk-wrong-" + "0" * 24))[0] == 401
        _, issued = await client_secret(http, mesh.secrets_url)
        assert (await client_secret(http, mesh.secrets_url, api_key=issued["value"]))[0] == 401, \
            "a client token cannot mint more client tokens"
        for body in ({"ttl_s": 61}, {"ttl_s": 0}, {"ttl_s": "10"}, {"origin": "app.example.com"},
                     {"region": "not a region"}):
            status, problem = await client_secret(http, mesh.secrets_url, **body)
            assert status == 400 and problem["title"] == "bad-client-secret-request", body
            assert API_KEY not in str(problem)
        async with http.post(mesh.secrets_url, data=b"[1, 2", headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
            assert resp.status == 400


async def test_an_expired_client_token_gets_401() -> None:
    async with embedded_mesh(edge_options=AUTH) as mesh, aiohttp.ClientSession() as http:
        _, issued = await client_secret(http, mesh.secrets_url, ttl_s=1)
        await asyncio.sleep(max(0.0, issued["expires_at"] - time.time()) + 0.1)

        status, _, body = await post_offer(http, mesh.whip_url, issued["value"], await real_offer())
        assert status == 401 and "expired" in body
        assert mesh.transceiver.sessions == {}


async def test_without_a_bearer_or_with_a_forged_token_401() -> None:
    async with embedded_mesh(edge_options=AUTH) as mesh, aiohttp.ClientSession() as http:
        sdp = await real_offer()
        async with http.post(mesh.whip_url, data=sdp, headers=SDP) as resp:
            assert resp.status == 401
        foreign, _ = ClientTokenCodec(MeshKeys({1: secrets.token_bytes(32)}, 1)).issue(
            now=time.time(), ttl_s=60, nonce=secrets.token_bytes(16))
        assert (await post_offer(http, mesh.whip_url, foreign, sdp))[0] == 401
        assert (await whip_counters(http, mesh))["unauthorized_mac"] == 1


async def test_a_token_bound_to_an_origin_is_refused_from_another() -> None:
    async with embedded_mesh(edge_options=AUTH) as mesh, aiohttp.ClientSession() as http:
        _, issued = await client_secret(http, mesh.secrets_url, origin="https://app.example.com")
        sdp = await real_offer()

        status, _, body = await post_offer(http, mesh.whip_url, issued["value"], sdp, Origin="https://evil.example")
        assert status == 401 and "origin" in body
        assert (await post_offer(http, mesh.whip_url, issued["value"], sdp))[0] == 401, "no Origin at all"
        status, headers, _ = await post_offer(http, mesh.whip_url, issued["value"], sdp, Origin="https://app.example.com")
        assert status == 201
        async with http.delete(mesh.edge.url + headers["Location"], headers={
                "Authorization": f"Bearer {issued['value']}", "Origin": "https://evil.example"}) as resp:
            assert resp.status == 401
        async with http.delete(mesh.edge.url + headers["Location"], headers={
                "Authorization": f"Bearer {issued['value']}", "Origin": "https://app.example.com"}) as resp:
            assert resp.status == 200


async def test_a_token_bound_to_a_region_pins_the_offer_and_refuses_another_pin() -> None:
    async with embedded_mesh(edge_options=AUTH) as mesh, aiohttp.ClientSession() as http:
        sdp = await real_offer()
        _, elsewhere = await client_secret(http, mesh.secrets_url, region="eu-west")
        status, _, body = await post_offer(http, f"{mesh.whip_url}?region=local", elsewhere["value"], sdp)
        assert status == 401 and "region" in body

        _, elsewhere = await client_secret(http, mesh.secrets_url, region="eu-west")
        status, _, body = await post_offer(http, mesh.whip_url, elsewhere["value"], sdp)
        assert status == 503 and "eu-west" in body, "the token pins the offer to its region, which has no transceiver"

        _, here = await client_secret(http, mesh.secrets_url, region="local")
        status, headers, _ = await post_offer(http, mesh.whip_url, here["value"], sdp, **{"Voicemesh-Region": "local"})
        assert status == 201
        async with http.delete(mesh.edge.url + headers["Location"], headers={"Authorization": f"Bearer {API_KEY}"}):
            pass


async def test_rotation_of_mesh_keys_and_api_keys() -> None:
    old, new, retired = (secrets.token_bytes(32) for _ in range(3))
    options = {"api_keys": f"new:{API_KEY},old:{OLD_API_KEY}"}
    async with embedded_mesh(keys=MeshKeys({2: new, 1: old}, 2), edge_options=options) as mesh, \
            aiohttp.ClientSession() as http:
        sdp = await real_offer()
        status, issued = await client_secret(http, mesh.secrets_url, api_key=OLD_API_KEY)
        assert status == 200 and ClientTokenCodec(MeshKeys({2: new}, 2)).verify(
            issued["value"], now=None, origin=None, region=None).key_id == 2, "issued under the current key"
        from_old_edge, _ = ClientTokenCodec(MeshKeys({1: old}, 1)).issue(now=time.time(), ttl_s=60,
                                                                          nonce=secrets.token_bytes(16))
        status, headers, _ = await post_offer(http, mesh.whip_url, from_old_edge, sdp)
        assert status == 201, "a token from an edge not yet rotated still works"
        from_retired, _ = ClientTokenCodec(MeshKeys({0: retired}, 0)).issue(now=time.time(), ttl_s=60,
                                                                             nonce=secrets.token_bytes(16))
        assert (await post_offer(http, mesh.whip_url, from_retired, sdp))[0] == 401
        async with http.delete(mesh.edge.url + headers["Location"], headers={"Authorization": f"Bearer {API_KEY}"}):
            pass
    async with embedded_mesh(edge_options={"api_keys": f"new:{API_KEY}"}) as mesh, aiohttp.ClientSession() as http:
        assert (await client_secret(http, mesh.secrets_url, api_key=OLD_API_KEY))[0] == 401, "a dropped key"
        assert (await client_secret(http, mesh.secrets_url, api_key=API_KEY))[0] == 200


async def test_cors_grants_only_the_configured_origins() -> None:
    async with embedded_mesh(edge_options=AUTH | {"cors_origins": "https://App.example.com"}) as mesh, \
            aiohttp.ClientSession() as http:
        async with http.options(mesh.whip_url, headers={"Origin": "https://app.example.com",
                                                        "Access-Control-Request-Method": "POST",
                                                        "Access-Control-Request-Headers": "authorization"}) as resp:
            assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            assert resp.headers["Vary"] == "Origin" and "POST" in resp.headers["Access-Control-Allow-Methods"]
            assert {"Authorization", "Content-Type", "If-Match"} <= set(
                resp.headers["Access-Control-Allow-Headers"].split(", "))
            assert resp.headers["Accept-Post"] == "application/sdp"
        async with http.options(mesh.whip_url + "/some-session", headers={
                "Origin": "https://app.example.com", "Access-Control-Request-Method": "PATCH"}) as resp:
            assert resp.status == 200 and {"PATCH", "DELETE"} <= set(resp.headers["Access-Control-Allow-Methods"]
                                                                       .split(", "))
            assert resp.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
        async with http.options(mesh.whip_url, headers={"Origin": "https://evil.example",
                                                        "Access-Control-Request-Method": "POST"}) as resp:
            assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
        _, issued = await client_secret(http, mesh.secrets_url)
        status, headers, _ = await post_offer(http, mesh.whip_url, issued["value"], await real_offer(),
                                              Origin="https://app.example.com")
        assert status == 201 and headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert {"Location", "ETag", "Link"} <= set(headers["Access-Control-Expose-Headers"].split(", "))
        async with http.delete(mesh.edge.url + headers["Location"], headers={
                "Authorization": f"Bearer {API_KEY}", "Origin": "https://evil.example"}) as resp:
            assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
        assert (await whip_counters(http, mesh))["cors_refused"] == 2


async def test_no_origin_is_granted_unless_configured_and_any_only_with_a_star() -> None:
    async with embedded_mesh(edge_options=AUTH) as mesh, aiohttp.ClientSession() as http:
        async with http.options(mesh.whip_url, headers={"Origin": "https://app.example.com",
                                                        "Access-Control-Request-Method": "POST"}) as resp:
            assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
    async with embedded_mesh(edge_options=AUTH | {"cors_origins": "*"}) as mesh, aiohttp.ClientSession() as http:
        async with http.options(mesh.whip_url, headers={"Origin": "https://any.example",
                                                        "Access-Control-Request-Method": "POST"}) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "https://any.example"
