"""End to end on one machine: an aiortc caller through the edge relay to the transceiver and the echo agent.

Real UDP on loopback, real aiortc on both sides, real gRPC to the agent. The
echo must correlate with the speech that was sent, not merely arrive.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import aiohttp
import pytest
from aioice import stun as aioice_stun
from offers import real_offer

from voicemesh.app.client import call
from voicemesh.app.demo import LOOPBACK, bundled_speech, embedded_mesh
from voicemesh.wire.token import TokenCodec

pytestmark = pytest.mark.integration


def binding_request(username: str, pwd: str = "x" * 22) -> bytes:
    """A well-formed ICE Binding request (RFC 8445 7.2.2) built with aioice's STUN codec."""
    msg = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    msg.attributes["USERNAME"] = username
    msg.attributes["PRIORITY"] = 1
    msg.attributes["ICE-CONTROLLING"] = 1
    msg.add_message_integrity(pwd.encode())
    msg.add_fingerprint()
    return bytes(msg)


def assert_echo(report) -> None:
    assert report.ok, report.error
    assert report.correlation is not None and report.correlation > 0.5
    assert report.packets_received > 100
    assert {"answer", "ice_connected", "dtls_connected", "first_audio"} <= set(report.setup_ms)


@pytest.mark.parametrize("media_path", ["lean", "aiortc"])
@pytest.mark.parametrize("codec", ["opus", "pcm16"])
async def test_call_echoes_speech(codec: str, media_path: str) -> None:
    async with embedded_mesh(agent_codec=codec, media_path=media_path) as mesh:
        report = await call(mesh.whip_url, bundled_speech(), bind=LOOPBACK)
        assert_echo(report)
        stats = mesh.relay.stats()
        assert stats["packets_in"] >= report.packets_sent
        assert stats["packets_out"] >= report.packets_received
        assert stats["drops"] == {}
        for _ in range(100):
            if not mesh.transceiver.sessions:
                break
            await asyncio.sleep(0.05)
        assert mesh.transceiver.sessions == {}, "DELETE ends the session"


async def test_bad_input_at_the_relay_does_not_disturb_a_call() -> None:
    async with embedded_mesh() as mesh:
        relay = mesh.relay.public_address
        index = mesh.transceiver.record.index
        now = int(time.time())
        forged = TokenCodec({1: os.urandom(32)}, 1).mint(region=1, transceiver=index, nonce=7, issued_at=now,
                                                         lifetime_s=60)
        expired = mesh.tokens.mint(region=1, transceiver=index, nonce=8, issued_at=now - 61, lifetime_s=60)
        unknown = mesh.tokens.mint(region=1, transceiver=999, nonce=9, issued_at=now, lifetime_s=60)
        attacks = {
            "not_stun": os.urandom(200),
            "truncated": binding_request(f"{expired}:abcd")[:30],
            "mac": binding_request(f"{forged}:abcd"),
            "expired": binding_request(f"{expired}:abcd"),
            "unknown_transceiver": binding_request(f"{unknown}:abcd"),
            "dtls": bytes([22, 0xFE, 0xFD]) + os.urandom(60),
        }

        async def attack() -> int:
            await asyncio.sleep(1.0)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((LOOPBACK, 0))
                for _ in range(20):
                    for data in attacks.values():
                        sock.sendto(data, relay)
                    await asyncio.sleep(0.05)
            return mesh.relay.stats()["flows"]

        report, flows = await asyncio.gather(call(mesh.whip_url, bundled_speech(), bind=LOOPBACK), attack())
        assert_echo(report)
        assert report.packets_lost == 0
        drops = mesh.relay.stats()["drops"]
        for reason in ("mac", "expired", "unknown_transceiver"):
            assert drops.get(reason) == 20, drops
        assert drops.get("not_stun", 0) >= 40  # random bytes and the DTLS record
        assert drops.get("truncated", 0) + drops.get("bad_length", 0) == 20
        assert flows == 1, "no flow was created for any attacker"


async def test_relay_never_sends_to_an_address_that_did_not_contact_it() -> None:
    from voicemesh.wire import frame

    async with embedded_mesh() as mesh:
        relay = mesh.relay
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spoofer:
            victim.bind((LOOPBACK, 0))
            victim.setblocking(False)
            spoofer.bind((LOOPBACK, 0))
            spoofed = frame.encode_header(victim.getsockname(), relay.flows.edge_id) + b"reflect me" * 50
            for _ in range(10):
                spoofer.sendto(spoofed, relay.backbone_address)
            await asyncio.sleep(0.3)
            with pytest.raises(BlockingIOError):
                victim.recv(2048)
            assert relay.stats()["drops"]["frame_unknown_transceiver"] == 10


async def whip_post(url: str, body: bytes | str, content_type: str = "application/sdp"):
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers={"Content-Type": content_type}) as resp:
            return resp.status, resp.headers, await resp.json(content_type=None) if resp.status >= 400 else None



@pytest.mark.parametrize(
    "body, content_type, status, title",
    [
        ("hello", "application/sdp", 400, "malformed-sdp"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "application/sdp", 400, "no-audio"),
        ("v=0", "text/plain", 415, "unsupported-media-type"),
        ("v=0", "application/json", 415, "unsupported-media-type"),
        (b"v=0" + b"a" * 70_000, "application/sdp", 413, "offer-too-large"),
        (b"v=0\xff\xfe", "application/sdp", 400, "malformed-sdp"),
    ],
)
async def test_whip_rejects_bad_offers(body, content_type, status, title) -> None:
    async with embedded_mesh() as mesh:
        got, _, problem = await whip_post(mesh.whip_url, body, content_type)
        assert (got, problem["title"]) == (status, title)
        assert problem["status"] == status and problem["detail"]


async def test_whip_rejects_offers_without_bundle_or_audio() -> None:
    async with embedded_mesh() as mesh:
        status, _, problem = await whip_post(mesh.whip_url, await real_offer(bundle=False))
        assert (status, problem["title"]) == (400, "no-bundle")
        status, _, problem = await whip_post(mesh.whip_url, await real_offer(audio=False))
        assert (status, problem["title"]) == (400, "no-audio")
        assert mesh.transceiver.sessions == {}


async def test_whip_no_capacity_is_503_with_retry_after() -> None:
    async with embedded_mesh(capacity=0) as mesh:
        status, headers, problem = await whip_post(mesh.whip_url, await real_offer())
        assert (status, problem["title"]) == (503, "no-capacity")
        assert int(headers["Retry-After"]) > 0


async def test_unconnected_session_is_closed_by_the_watchdog() -> None:
    async with embedded_mesh(connect_timeout_s=0.5) as mesh:
        async with aiohttp.ClientSession() as http:
            async with http.post(mesh.whip_url, data=await real_offer(),
                                 headers={"Content-Type": "application/sdp"}) as resp:
                assert resp.status == 201
                session_path = resp.headers["Location"]
        assert len(mesh.transceiver.sessions) == 1
        for _ in range(100):
            if not mesh.transceiver.sessions:
                break
            await asyncio.sleep(0.05)
        assert mesh.transceiver.sessions == {}
        async with aiohttp.ClientSession() as http:
            async with http.delete(mesh.edge.url + session_path) as resp:
                assert resp.status == 200, "a session of this mesh that ended already: the DELETE's aim holds"
            forged = session_path[:-8] + ("AAAAAAAA" if not session_path.endswith("AAAAAAAA") else "BBBBBBBB")
            async with http.delete(mesh.edge.url + forged) as resp:
                assert resp.status == 404, "an id this mesh never issued"
            assert (await (await http.get(f"{mesh.edge.url}/v1/status")).json())["whip"]["deleted_after_end"] == 1


class RebindingNat:
    """A UDP NAT in front of the relay whose outside port changes on ``rebind()``.

    Callers send to ``address``; the relay sees them from the NAT's current
    outside socket, as it would a client whose NAT mapping expired.
    """

    def __init__(self) -> None:
        self.inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.inside.bind((LOOPBACK, 0))
        self.inside.setblocking(False)
        self.address = self.inside.getsockname()
        self.outside: list[socket.socket] = []
        self.client: tuple[str, int] | None = None
        self.relay: tuple[str, int] | None = None
        self.rebind()

    def rebind(self) -> None:
        loop = asyncio.get_event_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOOPBACK, 0))
        sock.setblocking(False)
        if self.outside:
            loop.remove_reader(self.outside[-1].fileno())
        self.outside.append(sock)
        loop.add_reader(sock.fileno(), self._from_relay, sock)

    def start(self, relay: tuple[str, int]) -> None:
        self.relay = relay
        asyncio.get_event_loop().add_reader(self.inside.fileno(), self._from_client)

    def _from_client(self) -> None:
        data, self.client = self.inside.recvfrom(2048)
        self.outside[-1].sendto(data, self.relay)

    def _from_relay(self, sock: socket.socket) -> None:
        data, _ = sock.recvfrom(2048)
        self.inside.sendto(data, self.client)

    def close(self) -> None:
        loop = asyncio.get_event_loop()
        loop.remove_reader(self.inside.fileno())
        loop.remove_reader(self.outside[-1].fileno())
        for sock in [self.inside, *self.outside]:
            sock.close()


async def test_call_survives_a_client_nat_rebinding() -> None:
    nat = RebindingNat()
    try:
        async with embedded_mesh(advertise=f"{nat.address[0]}:{nat.address[1]}") as mesh:
            nat.start(mesh.relay.public_address)

            async def rebind_during_the_clip() -> tuple[list, list[str]]:
                await asyncio.sleep(3.0)
                nat.rebind()
                await asyncio.sleep(10.0)
                flows = list(mesh.relay.flows.by_client.values())
                await asyncio.sleep(24.0)  # past ICE consent's 30 s after the rebinding (RFC 7675)
                return flows, [s.pc.connectionState for s in mesh.transceiver.sessions.values()]

            report, (flows, states) = await asyncio.gather(
                call(mesh.whip_url, bundled_speech(), bind=LOOPBACK, duration_s=40.0), rebind_during_the_clip())
            assert report.ok, report.error
            assert states == ["connected"], "consent lives on after the rebinding: its checks reach the caller"
            assert len(flows) == 2, "the rebound address got a flow of its own"
            new = next(f for f in flows if f.client == nat.outside[-1].getsockname())
            assert new.packets_out > 100, "media went back through the new mapping"
            assert mesh.transceiver.mux.core.events["route_switched"] == 1
            while mesh.transceiver.sessions:
                await asyncio.sleep(0.05)
            assert mesh.relay.flows.by_client == {}, "the session's end closed both flows (the mux's close frames)"
    finally:
        nat.close()


async def test_a_draining_edge_keeps_its_calls_and_refuses_new_ones() -> None:
    async with embedded_mesh() as mesh:
        mesh.edge.config.drain_timeout_s = 60.0

        async def drain_mid_call() -> tuple[int, str]:
            await asyncio.sleep(2.0)
            drained = asyncio.ensure_future(mesh.edge.drain())
            await asyncio.sleep(0.5)
            status, _, problem = await whip_post(mesh.whip_url, await real_offer())
            await drained
            return status, problem["title"]

        report, refused = await asyncio.gather(call(mesh.whip_url, bundled_speech(), bind=LOOPBACK), drain_mid_call())
        assert_echo(report)
        assert refused == (503, "draining")
        assert mesh.edge.record.draining
        assert [n.draining for n in mesh.transceiver.registry.nodes("edge")] == [True]


async def test_an_offer_split_across_tcp_segments_is_read_whole() -> None:
    async with embedded_mesh() as mesh:
        offer = (await real_offer()).encode()
        host, port = mesh.edge.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(offer) + offer[:500])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(offer[500:])
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        assert b" 201 " in status_line


async def test_an_api_key_is_a_whip_bearer_when_auth_is_on() -> None:
    async with embedded_mesh(edge_options={"api_keys": "backend:s3cret-s3cret-s3cret"}) as mesh:
        offer = await real_offer()
        async with aiohttp.ClientSession() as http:
            async with http.post(mesh.whip_url, data=offer, headers={"Content-Type": "application/sdp"}) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await resp.json(content_type=None))["title"] == "unauthorized"
            auth = {"Authorization": "Bearer s3cret-s3cret-s3cret"}
            async with http.post(mesh.whip_url, data=offer,
                                 headers={"Content-Type": "application/sdp", **auth}) as resp:
                assert resp.status == 201
                location = resp.headers["Location"]
            async with http.delete(mesh.edge.url + location) as resp:
                assert resp.status == 401
            async with http.delete(mesh.edge.url + location, headers=auth) as resp:
                assert resp.status == 200
        assert mesh.transceiver.sessions == {}


async def test_relay_forwards_an_ipv6_client() -> None:
    from voicemesh.edge.relay import Relay
    from voicemesh.runtime.udp import bind_udp
    from voicemesh.wire import frame

    tokens = TokenCodec({1: os.urandom(32)}, 1)
    transceiver = bind_udp("::1", 0)
    relay = Relay(bind_udp("::1", 0), bind_udp("::1", 0, reuse_port=True), 7, tokens)
    relay.directory = {(1, 1): transceiver.getsockname()[:2]}
    relay.start()
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
            client.bind(("::1", 0))
            client.settimeout(2)
            ufrag = tokens.mint(region=1, transceiver=1, nonce=1, issued_at=int(time.time()), lifetime_s=60)
            loop = asyncio.get_running_loop()
            for payload in (binding_request(f"{ufrag}:abcd"), b"\x80" + b"rtp" * 20):
                client.sendto(payload, relay.public_address)
                data = await asyncio.wait_for(loop.sock_recv(transceiver, 2048), 5)
                (ip, port), edge_id, n = frame.decode(data)
                assert (ip, port, edge_id, data[n:]) == ("::1", client.getsockname()[1], 7, payload)
            check = binding_request(f"abcd:{ufrag}")  # the transceiver's check, answered: the flow is proven
            transceiver.sendto(data[:n] + check, relay.backbone_address)
            assert await loop.run_in_executor(None, client.recv, 2048) == check
            answer = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.RESPONSE,
                                         transaction_id=aioice_stun.parse_message(check).transaction_id)
            client.sendto(bytes(answer), relay.public_address)
            await asyncio.wait_for(loop.sock_recv(transceiver, 2048), 5)
            transceiver.sendto(data[:n] + b"back", relay.backbone_address)
            assert await loop.run_in_executor(None, client.recv, 2048) == b"back"
        assert relay.stats()["drops"] == {}
    finally:
        relay.close()
        transceiver.close()
