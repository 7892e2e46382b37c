"""The transceiver's admission: capacity is taken atomically, draining refuses, and the agent stream opens
only when the caller connects; a PCM16 answer tells the caller the agent's rate; with the registry out of
reach, offers get 503 and live sessions are claimed again once it is back. Real aiortc offers to a real
transceiver API in the embedded mesh or on a real etcd."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import secrets
import signal
import subprocess
import time
import weakref

import aiohttp
import pytest
from etcd3aio import Etcd3Client
from offers import real_offer

from voicemesh.app.client import call
from voicemesh.app.demo import LOOPBACK, bundled_speech, embedded_mesh
from voicemesh.core import api, echo_agent
from voicemesh.core import transceiver as transceiver_module
from voicemesh.core.config import TransceiverConfig
from voicemesh.core.transceiver import Transceiver
from voicemesh.registry import MemoryRegistry
from voicemesh.registry.etcd import EtcdRegistry
from voicemesh.wire.hopauth import SIGNATURE, HopRequest, HopSigner, HopVerifier
from voicemesh.wire.meshkeys import MeshKeys
from voicemesh.wire.signaling import EDGE_ID, RELAY_ADDRESS, SDP_TYPE
from voicemesh.wire.token import TokenCodec

pytestmark = pytest.mark.integration



def signed(mesh, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> dict[str, str]:
    """``headers`` with the hop signature an edge of ``mesh`` puts on a request to its transceiver."""
    request = HopRequest.from_headers(method, path, mesh.transceiver.config.node_id, body, headers or {})
    return (headers or {}) | {SIGNATURE: HopSigner(mesh.keys).sign(request, time.time())}


async def post_offer(http: aiohttp.ClientSession, mesh, sdp: str, trx_url: str = "") -> tuple[int, dict, str]:
    """POST ``sdp`` to the mesh's transceiver API (at ``trx_url``, default: where it registered) the way an
    edge does; returns status, headers and body."""
    headers = signed(mesh, "POST", "/v1/sessions", sdp.encode(),
                     {"Content-Type": SDP_TYPE, EDGE_ID: "1", RELAY_ADDRESS: "127.0.0.1:3478"})
    async with http.post(f"{trx_url or mesh.transceiver.record.http}/v1/sessions", data=sdp, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def test_capacity_admits_exactly_its_size_among_concurrent_offers() -> None:
    async with embedded_mesh(capacity=2) as mesh:
        offers = await asyncio.gather(*(real_offer() for _ in range(10)))
        async with aiohttp.ClientSession() as http:
            results = await asyncio.gather(*(post_offer(http, mesh, sdp) for sdp in offers))
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [201] * 2 + [503] * 8
        for status, headers, body in results:
            if status == 503:
                assert int(headers["Retry-After"]) > 0 and '"no-capacity"' in body
        assert len(mesh.transceiver.sessions) == 2


async def test_a_rejected_offer_gives_its_place_back() -> None:
    async with embedded_mesh(capacity=1) as mesh:
        async with aiohttp.ClientSession() as http:
            status, _, _ = await post_offer(http, mesh, (await real_offer()).replace("a=group:BUNDLE 0\r\n", ""))
            assert status == 400
            status, _, _ = await post_offer(http, mesh, await real_offer())
            assert status == 201


async def test_a_draining_transceiver_refuses_offers() -> None:
    async with embedded_mesh() as mesh:
        trx = mesh.transceiver.record.http
        async with aiohttp.ClientSession() as http:
            status, headers, _ = await post_offer(http, mesh, await real_offer())
            assert status == 201
            mesh.transceiver.config.drain_timeout_s = 30.0
            closing = asyncio.ensure_future(mesh.transceiver.close())
            while not mesh.transceiver.record.draining:
                await asyncio.sleep(0)
            status, headers, body = await post_offer(http, mesh, await real_offer())
            assert status == 503 and int(headers["Retry-After"]) > 0 and '"draining"' in body
            [session_id] = mesh.transceiver.sessions
            path = f"/v1/sessions/{session_id}"
            async with http.delete(f"{trx}{path}", headers=signed(mesh, "DELETE", path)) as resp:
                assert resp.status == 200
            await closing
            status, _, body = await post_offer(http, mesh, await real_offer(), trx)
            assert status == 503 and '"draining"' in body, "a closed transceiver refuses too"


async def test_the_agent_stream_opens_when_the_caller_connects_not_at_the_offer() -> None:
    async with embedded_mesh() as mesh:
        async with aiohttp.ClientSession() as http:
            status, _, _ = await post_offer(http, mesh, await real_offer())
        assert status == 201
        [session] = mesh.transceiver.sessions.values()
        assert session.pc.connectionState != "connected" and session.agent is None
        report = await call(mesh.whip_url, bundled_speech(), bind=LOOPBACK)
        assert report.ok and report.correlation is not None and report.correlation > 0.5, report.error
        assert "first_audio" in report.setup_ms


@pytest.mark.parametrize(("codec", "fmtp"), [
    ("pcm16", "maxplaybackrate=16000;sprop-maxcapturerate=16000"), ("opus", None)])
async def test_only_a_pcm16_answer_caps_the_callers_opus_at_the_agent_rate(codec: str, fmtp: str | None) -> None:
    """In PCM16 mode the transceiver decodes at the agent's rate (16 kHz): the answer says so (RFC 7587 6.1).
    In Opus mode the agent gets the caller's own Opus, so its answer asks for nothing."""
    async with embedded_mesh(agent_codec=codec) as mesh:
        async with aiohttp.ClientSession() as http:
            status, _, answer = await post_offer(http, mesh, await real_offer())
        assert status == 201
        pt = next(line.split()[0].split(":")[1] for line in answer.splitlines() if " opus/48000" in line)
        fmtps = [line.split(" ", 1)[1] for line in answer.splitlines() if line.startswith(f"a=fmtp:{pt} ")]
        assert fmtps == ([fmtp] if fmtp else [])


async def test_answers_share_one_certificate_until_it_is_rotated(monkeypatch) -> None:
    """One DTLS certificate serves every session of a transceiver (core/hooks.py SharedCertificate), the
    callers' own apart; once CERTIFICATE_ROTATE_S has passed, new sessions get a fresh one."""
    def fingerprint(sdp: str) -> str:
        return next(line for line in sdp.splitlines() if line.startswith("a=fingerprint:sha-256"))

    async with embedded_mesh() as mesh, aiohttp.ClientSession() as http:
        offers = [await real_offer() for _ in range(3)]
        answers = [(await post_offer(http, mesh, sdp))[2] for sdp in offers[:2]]
        assert fingerprint(answers[0]) == fingerprint(answers[1])
        assert fingerprint(answers[0]) not in {fingerprint(sdp) for sdp in offers}
        monkeypatch.setattr(transceiver_module, "CERTIFICATE_ROTATE_S", 0.0)
        rotated = (await post_offer(http, mesh, offers[2]))[2]
        assert fingerprint(rotated) != fingerprint(answers[0])


@contextlib.contextmanager
def automatic_collection_off():
    """CPython's own collector off for the block (as it is, in effect, for the minutes between the full
    collections of a transceiver under churn), so only an explicit ``gc.collect()`` frees reference cycles."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_an_ended_session_is_freed_without_waiting_for_the_collector() -> None:
    async with embedded_mesh() as mesh:
        with automatic_collection_off():
            placed = asyncio.ensure_future(call(mesh.whip_url, bundled_speech(), bind=LOOPBACK, duration_s=1.0))
            while not mesh.transceiver.sessions and not placed.done():
                await asyncio.sleep(0.05)
            [session] = mesh.transceiver.sessions.values()
            pc = weakref.ref(session.pc)
            del session
            report = await placed
            assert report.ok, report.error
            for _ in range(600):
                if pc() is None:
                    break
                await asyncio.sleep(0.05)
            assert pc() is None, "the ended session's peer connection is still in memory"


def test_an_agent_format_the_link_cannot_carry_fails_at_construction_not_at_connect() -> None:
    with pytest.raises(ValueError, match="agent rate"):
        Transceiver(TransceiverConfig(agent_codec="pcm16", agent_rate_hz=0), MemoryRegistry(), TokenCodec({1: b"k" * 32}, 1))
    with pytest.raises(ValueError, match="Opus application"):
        Transceiver(TransceiverConfig(agent_codec="pcm16", opus_application="music"), MemoryRegistry(),
                    TokenCodec({1: b"k" * 32}, 1))


@dataclasses.dataclass
class EtcdMesh:
    """A transceiver on a real etcd and the mesh keys its edges sign with (what ``signed`` needs)."""

    transceiver: Transceiver
    keys: MeshKeys


@contextlib.asynccontextmanager
async def transceiver_on_etcd(endpoint: str):
    """A transceiver API whose registry is the real etcd at ``endpoint`` (lease TTL 2 s), with the echo agent."""
    registry = EtcdRegistry([endpoint], lease_ttl_s=2)
    await registry.start()
    agent, port = await echo_agent.serve("127.0.0.1:0")
    keys = MeshKeys({1: secrets.token_bytes(32)}, 1)
    transceiver = Transceiver(TransceiverConfig(agent=f"127.0.0.1:{port}", connect_timeout_s=120, drain_timeout_s=0),
                              registry, TokenCodec.from_mesh_keys(keys))
    runner = await api.serve(transceiver, HopVerifier(keys), "127.0.0.1", 0)
    try:
        yield EtcdMesh(transceiver, keys)
    finally:
        await runner.cleanup()
        await transceiver.close()
        await agent.stop(0.5)
        await registry.close()


@contextlib.asynccontextmanager
async def frozen(process: subprocess.Popen):
    """etcd unreachable (SIGSTOP) inside the block."""
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


async def test_offers_get_503_with_retry_after_while_the_registry_is_unreachable(etcd) -> None:
    async with transceiver_on_etcd(etcd.endpoint) as mesh, aiohttp.ClientSession() as http:
        sdp = await real_offer()
        async with frozen(etcd.process):
            status, headers, _ = await post_offer(http, mesh, sdp)
        assert status == 503 and int(headers["Retry-After"]) > 0
        assert mesh.transceiver.sessions == {}
        for _ in range(40):  # etcd answers again: so do offers
            status, _, _ = await post_offer(http, mesh, await real_offer())
            if status == 201:
                break
            await asyncio.sleep(0.25)
        assert status == 201


async def test_live_sessions_are_claimed_again_after_an_etcd_outage_and_can_be_deleted(etcd) -> None:
    async with (transceiver_on_etcd(etcd.endpoint) as mesh, aiohttp.ClientSession() as http,
                Etcd3Client([etcd.endpoint]) as raw):
        transceiver = mesh.transceiver
        status, _, _ = await post_offer(http, mesh, await real_offer())
        assert status == 201
        [session] = transceiver.sessions.values()
        old = session.claim
        async with frozen(etcd.process):
            await asyncio.sleep(3 * transceiver.registry.lease_ttl_s)
        for _ in range(400):
            if session.claim is not old:
                break
            await asyncio.sleep(0.05)

        [kv] = (await raw.kv.get(old.key)).kvs
        assert session.claim.revision > old.revision and kv.mod_revision == session.claim.revision
        assert await transceiver.registry.session_owner(session.id) == transceiver.config.node_id
        path = f"/v1/sessions/{session.id}"
        async with http.delete(f"{transceiver.record.http}{path}", headers=signed(mesh, "DELETE", path)) as resp:
            assert resp.status == 200
        assert (await raw.kv.get(old.key)).kvs == []
