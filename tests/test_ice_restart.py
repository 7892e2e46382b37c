"""WHIP PATCH through a whole embedded mesh (RFC 9725 4.3): trickle ICE, its If-Match rules, and an ICE
restart after which a caller that moved to a new address keeps its call."""

from __future__ import annotations

import asyncio
import re
import secrets

import aiohttp
import pytest
from aioice.candidate import Candidate
from aioice.ice import CandidatePair, StunProtocol
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from voicemesh.app.demo import LOOPBACK, embedded_mesh
from voicemesh.core import hooks
from voicemesh.edge.config import EdgeConfig
from voicemesh.edge.node import EdgeNode
from voicemesh.wire.signaling import SDP_TYPE, TRICKLE_TYPE
from voicemesh.wire.token import TokenCodec

pytestmark = pytest.mark.integration

TRICKLE = {"Content-Type": TRICKLE_TYPE}


def sdpfrag(ufrag: str, pwd: str, candidate: str = "") -> str:
    """A PATCH body as the reference WHIP client writes it: credentials, then candidates of mid 0 if any."""
    frag = f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n"
    if candidate:
        frag += f"m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na={candidate}\r\na=end-of-candidates\r\n"
    return frag


async def connected_caller(http: aiohttp.ClientSession, whip_url: str) -> tuple[RTCPeerConnection, str, str]:
    """An aiortc caller connected through the mesh: (peer connection, session URL path, ETag)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(AudioStreamTrack())
    with hooks.gather_on(LOOPBACK):
        await pc.setLocalDescription(await pc.createOffer())
    async with http.post(whip_url, data=pc.localDescription.sdp, headers={"Content-Type": SDP_TYPE}) as resp:
        assert resp.status == 201, await resp.text()
        location, etag, answer = resp.headers["Location"], resp.headers["ETag"], await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    while pc.connectionState != "connected":
        await asyncio.sleep(0.02)
    return pc, location, etag


async def received_packets(pc: RTCPeerConnection) -> int:
    return sum(s.packetsReceived for s in (await pc.getStats()).values() if s.type == "inbound-rtp")


async def move_caller(conn, ufrag: str, pwd: str, answer: str) -> tuple[StunProtocol, asyncio.DatagramTransport]:
    """What a browser does after restartIce() on a new network: new credentials, a new socket, a check with
    USE-CANDIDATE to the server's answered candidate from it; the old socket is gone (its network is)."""
    server_ufrag = re.search(r"a=ice-ufrag:(\S+)", answer)[1]
    server_pwd = re.search(r"a=ice-pwd:(\S+)", answer)[1]
    host, port = re.search(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", answer).groups()
    old = next(iter(conn._nominated.values())).protocol
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: StunProtocol(conn), local_addr=(LOOPBACK, 0))
    protocol.local_candidate = Candidate("moved", 1, "udp", 2130706431, *transport.get_extra_info("sockname")[:2],
                                         "host")
    conn._protocols.append(protocol)
    hooks.restart_ice(conn, ufrag, pwd, server_ufrag, server_pwd)
    pair = CandidatePair(protocol, Candidate("relay", 1, "udp", 2130706431, host, int(port), "host"))
    conn._check_list.append(pair)
    await conn.check_start(pair)
    assert next(iter(conn._nominated.values())) is pair, "the caller nominated its new path"
    old.transport.close()
    return protocol, transport


async def test_a_caller_that_moves_keeps_its_call_through_an_ice_restart() -> None:
    async with embedded_mesh() as mesh, aiohttp.ClientSession() as http:
        pc, location, etag = await connected_caller(http, mesh.whip_url)
        url = mesh.edge.url + location
        session = next(iter(mesh.transceiver.sessions.values()))
        first_ufrag = session.ufrag
        await asyncio.sleep(1.0)
        before = await received_packets(pc)
        assert before > 0

        ufrag, pwd = secrets.token_hex(4), secrets.token_hex(16)
        async with http.patch(url, data=sdpfrag(ufrag, pwd), headers=TRICKLE | {"If-Match": "*"}) as resp:
            assert resp.status == 200 and resp.content_type == TRICKLE_TYPE
            answer, new_etag = await resp.text(), resp.headers["ETag"]
        assert new_etag != etag and session.ufrag != first_ufrag and f"a=ice-ufrag:{session.ufrag}\r\n" in answer
        old, new = (TokenCodec.verify(mesh.tokens, u, now=0) for u in (first_ufrag, session.ufrag))
        assert (new.region, new.transceiver, new.expires_at) == (old.region, old.transceiver, old.expires_at)
        assert new.nonce != old.nonce and new.issued_at >= old.issued_at
        async with http.patch(url, data=sdpfrag(ufrag, pwd), headers=TRICKLE | {"If-Match": "*"}) as resp:
            assert (resp.status, await resp.text(), resp.headers["ETag"]) == (200, answer, new_etag), \
                "a restart asked again (its answer lost) gets the same answer"

        protocol, transport = await move_caller(hooks.ice_connection(pc), ufrag, pwd, answer)
        moved_to = transport.get_extra_info("sockname")[:2]
        await asyncio.sleep(2.0)
        after = await received_packets(pc)
        assert after - before > 50, "the echo kept coming, over the new path"
        flow = mesh.relay.flows.by_client[moved_to]
        assert flow.ufrag == session.ufrag.encode() and flow.packets_out > 50, "a new relay flow, by the new token"
        assert session.pc.connectionState == "connected"
        events = mesh.transceiver.mux.core.events
        assert events["rekeyed"] == 1 and events["route_switched"] == 1

        async with http.patch(url, data=sdpfrag(ufrag, pwd, "candidate:1 1 udp 1 192.0.2.1 9 typ host"),
                              headers=TRICKLE | {"If-Match": new_etag}) as resp:
            assert resp.status == 204, "trickle of the current ICE session: candidates are not needed"
        async with http.delete(url) as resp:
            assert resp.status == 200
        transport.close()
        await pc.close()


async def test_a_caller_that_moves_to_another_edge_restarts_ice_through_it() -> None:
    async with embedded_mesh() as mesh, aiohttp.ClientSession() as http:
        other = EdgeNode(EdgeConfig(node_id="edge-2", public=f"{LOOPBACK}:0", backbone=f"{LOOPBACK}:0",
                                    http=f"{LOOPBACK}:0"), mesh.edge.registry, mesh.keys)
        await other.start()
        try:
            pc, location, _ = await connected_caller(http, mesh.whip_url)
            while len(mesh.transceiver.registry.nodes("edge")) < 2:
                await asyncio.sleep(0.02)
            before = await received_packets(pc)
            ufrag, pwd = secrets.token_hex(4), secrets.token_hex(16)
            async with http.patch(other.url + location, data=sdpfrag(ufrag, pwd),
                                  headers=TRICKLE | {"If-Match": "*"}) as resp:
                assert resp.status == 200
                answer = await resp.text()
            assert f" {other.record.public_relay.replace(':', ' ')} typ host" in answer, "the new edge's relay"
            _, transport = await move_caller(hooks.ice_connection(pc), ufrag, pwd, answer)
            await asyncio.sleep(2.0)
            assert await received_packets(pc) - before > 50
            assert other.relay is not None
            [flow] = other.relay.flows.by_client.values()
            assert flow.client == transport.get_extra_info("sockname")[:2] and flow.packets_out > 50
            session = next(iter(mesh.transceiver.sessions.values()))
            assert session.edge.edge_id == other.record.index
            async with http.delete(mesh.edge.url + location) as resp:
                assert resp.status == 200
            transport.close()
            await pc.close()
        finally:
            await other.close()


async def test_patch_needs_if_match_and_the_current_ice_session() -> None:
    async with embedded_mesh() as mesh, aiohttp.ClientSession() as http:
        pc, location, etag = await connected_caller(http, mesh.whip_url)
        url = mesh.edge.url + location
        ice = hooks.ice_connection(pc)
        trickle = sdpfrag(ice.local_username, ice.local_password, "candidate:1 1 udp 1 192.0.2.1 9 typ host")
        async with http.patch(url, data=trickle, headers=TRICKLE) as resp:
            assert resp.status == 428
        async with http.patch(url, data=trickle, headers=TRICKLE | {"If-Match": '"not-it"'}) as resp:
            assert resp.status == 412 and resp.headers["ETag"] == etag
        async with http.patch(url, data=trickle, headers=TRICKLE | {"If-Match": etag}) as resp:
            assert resp.status == 204
        async with http.patch(url, data=trickle, headers={"Content-Type": SDP_TYPE, "If-Match": etag}) as resp:
            assert resp.status == 415
        async with http.patch(url, data=sdpfrag(secrets.token_hex(4), secrets.token_hex(16)),
                              headers=TRICKLE | {"If-Match": etag}) as resp:
            assert resp.status == 422, "new credentials without If-Match: * are not a restart"
        async with http.patch(url, data="a=ice-ufrag:abcd\r\n", headers=TRICKLE | {"If-Match": etag}) as resp:
            assert resp.status == 400
        async with http.patch(mesh.edge.url + "/v1/sessions/nosuchsession", data=trickle,
                              headers=TRICKLE | {"If-Match": "*"}) as resp:
            assert resp.status == 404
        async with http.delete(url) as resp:
            assert resp.status == 200
        await pc.close()


async def test_no_ice_restart_before_ice_connects() -> None:
    async with embedded_mesh() as mesh, aiohttp.ClientSession() as http:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(mesh.whip_url, data=pc.localDescription.sdp, headers={"Content-Type": SDP_TYPE}) as resp:
            location = resp.headers["Location"]
        await pc.close()
        async with http.patch(mesh.edge.url + location, data=sdpfrag(secrets.token_hex(4), secrets.token_hex(16)),
                              headers=TRICKLE | {"If-Match": "*"}) as resp:
            assert resp.status == 409 and (await resp.json())["title"] == "ice-not-connected"
        assert len(mesh.transceiver.sessions) == 1, "a refused restart leaves the session as it was"


async def test_a_transceiver_that_lost_its_registry_index_refuses_ice_restarts() -> None:
    """Another node took this transceiver's registry index while its lease was gone, so it drains and exits: a
    routing token minted now would carry that index and send the caller's new checks to the other node. An ICE
    restart gets 503 (start a new session) and the call goes on over its path as it was."""
    async with embedded_mesh() as mesh, aiohttp.ClientSession() as http:
        pc, location, _etag = await connected_caller(http, mesh.whip_url)
        session = next(iter(mesh.transceiver.sessions.values()))
        first_ufrag = session.ufrag
        mesh.transceiver.registry._index_lost("/voicemesh/v1/index/transceiver/local/1")

        async with http.patch(mesh.edge.url + location, data=sdpfrag(secrets.token_hex(4), secrets.token_hex(16)),
                              headers=TRICKLE | {"If-Match": "*"}) as resp:
            assert resp.status == 503 and (await resp.json())["title"] == "draining"
        assert session.ufrag == first_ufrag and session.restarts == 0
        before = await received_packets(pc)
        await asyncio.sleep(1.0)
        assert await received_packets(pc) > before, "the call goes on"
        await pc.close()
