"""Integration tests of the edge's ICE-TCP listener (edge/relay_tcp.py) on real TCP and UDP sockets on
loopback: a client over RFC 4571 framing is routed by its token to a transceiver's backbone socket with the
TCP bit set, replies come back framed on its connection, and each connection rule closes what it must."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest
from aioice import stun as aioice_stun
from stun_messages import binding

from voicemesh.app.demo import LOOPBACK
from voicemesh.edge.flows import FlowState, tcp_key
from voicemesh.edge.relay import Relay
from voicemesh.edge.relay_tcp import TcpRelay, bind_tcp
from voicemesh.edge.relay_tcp_core import frame_packet
from voicemesh.runtime.udp import bind_udp
from voicemesh.wire import frame
from voicemesh.wire.token import TokenCodec

pytestmark = pytest.mark.integration

SRTP = b"\x80\x6f" + bytes(98)
DTLS = bytes([22, 0xFE, 0xFD]) + bytes(60)



class Mesh:
    """A relay with its ICE-TCP listener, and one transceiver's backbone socket in its directory."""

    def __init__(self, **tcp_settings) -> None:
        self.tokens = TokenCodec({1: os.urandom(32)}, 1)
        self.transceiver = bind_udp(LOOPBACK, 0)
        self.relay = Relay(bind_udp(LOOPBACK, 0), bind_udp(LOOPBACK, 0, reuse_port=True), 7, self.tokens)
        self.relay.directory = {(1, 5): self.transceiver.getsockname()}
        self.tcp = TcpRelay(self.relay, bind_tcp(LOOPBACK, 0), **tcp_settings)

    async def __aenter__(self) -> Mesh:
        self.relay.start()
        await self.tcp.start()
        return self

    async def __aexit__(self, *exc) -> None:
        self.tcp.close()
        self.relay.close()
        self.transceiver.close()

    def ufrag(self) -> str:
        return self.tokens.mint(region=1, transceiver=5, nonce=int.from_bytes(os.urandom(3), "big"),
                                issued_at=int(time.time()), lifetime_s=600)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(*self.tcp.address)

    async def backbone(self, timeout_s: float = 2.0) -> bytes:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.transceiver, 2048), timeout_s)

    def reply(self, data: bytes) -> None:
        self.transceiver.sendto(data, self.relay.backbone_address)


async def read_packet(reader: asyncio.StreamReader, timeout_s: float = 2.0) -> bytes:
    length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), timeout_s), "big")
    return await asyncio.wait_for(reader.readexactly(length), timeout_s)


async def closed(reader: asyncio.StreamReader, timeout_s: float = 5.0) -> bool:
    """Whether the relay closes the connection (EOF or reset) before ``timeout_s``."""
    try:
        return await asyncio.wait_for(reader.read(), timeout_s) == b""
    except ConnectionResetError:
        return True


async def test_a_tcp_caller_is_routed_by_its_token_and_answered_on_its_connection() -> None:
    async with Mesh() as mesh:
        reader, writer = await mesh.connect()
        ufrag = mesh.ufrag()
        first = binding(aioice_stun.Class.REQUEST, f"{ufrag}:cli1")
        writer.write(frame_packet(first))

        data = await mesh.backbone()
        n = frame.header_length(data)
        assert frame.is_tcp(data) and data[n:] == first
        assert frame.decode(data)[0] == writer.get_extra_info("sockname")[:2], "the transceiver sees the client"

        check = binding(aioice_stun.Class.REQUEST, f"cli1:{ufrag}")
        mesh.reply(data[:n] + check)
        assert await read_packet(reader) == check
        writer.write(frame_packet(binding(aioice_stun.Class.RESPONSE, transaction_id=check[8:20])) + frame_packet(SRTP))
        await mesh.backbone()
        assert await mesh.backbone() == data[:n] + SRTP, "proven: media goes up"
        mesh.reply(data[:n] + SRTP)
        assert await read_packet(reader) == SRTP, "and comes back framed"

        flow = mesh.relay.flows.by_client[tcp_key(writer.get_extra_info("sockname"))]
        assert flow.state is FlowState.OPEN
        tcp = mesh.relay.stats()["by_transport"]["tcp"]
        assert (tcp["flows_open"], tcp["packets_in"], tcp["packets_out"], tcp["connections_routed"]) == (1, 3, 2, 1)

        writer.close()
        while mesh.relay.flows.by_client:
            await asyncio.sleep(0.01)
        assert mesh.relay.stats()["flows_disconnected"] == 1, "its connection gone, the flow goes"


@pytest.mark.parametrize("first, drop", [(DTLS, "not_stun"), (binding(aioice_stun.Class.REQUEST, "NoToken:cli1"), None)])
async def test_a_first_packet_that_opens_no_flow_closes_the_connection(first: bytes, drop: str | None) -> None:
    async with Mesh() as mesh:
        reader, writer = await mesh.connect()
        writer.write(frame_packet(first) + frame_packet(SRTP))

        assert await closed(reader)
        assert mesh.tcp.gate.counters["closed_refused"] == 1 and len(mesh.relay.flows) == 0
        assert drop is None or mesh.relay.core.tcp_drops[drop] == 1
        with pytest.raises(TimeoutError):
            await mesh.backbone(0.2)


async def test_malformed_framing_closes_the_connection() -> None:
    async with Mesh(max_frame_bytes=600) as mesh:
        reader, writer = await mesh.connect()
        writer.write((601).to_bytes(2, "big"))

        assert await closed(reader)
        assert mesh.tcp.gate.counters["closed_framing_length"] == 1


async def test_a_connection_trickling_its_first_packet_is_closed_at_the_deadline() -> None:
    async with Mesh(first_packet_timeout_s=0.4) as mesh:
        reader, writer = await mesh.connect()
        packet = frame_packet(binding(aioice_stun.Class.REQUEST, f"{mesh.ufrag()}:cli1"))
        writer.write(packet[:3])

        assert await closed(reader)
        assert mesh.tcp.gate.counters["closed_first_packet_timeout"] == 1 and len(mesh.tcp.gate) == 0


async def test_one_source_holds_at_most_max_per_source_connections() -> None:
    async with Mesh(max_per_source=2) as mesh:
        kept = [await mesh.connect() for _ in range(2)]
        reader, _ = await mesh.connect()

        assert await closed(reader)
        assert mesh.tcp.gate.counters["source_cap"] == 1 and len(mesh.tcp.gate) == 2
        for _, writer in kept:
            writer.close()


async def test_the_relay_holds_at_most_max_connections() -> None:
    async with Mesh(max_connections=1) as mesh:
        _, writer = await mesh.connect()
        reader, _ = await mesh.connect()

        assert await closed(reader)
        assert mesh.tcp.gate.counters["total_cap"] == 1
        writer.close()


async def test_the_sessions_close_frame_closes_its_connection() -> None:
    async with Mesh() as mesh:
        reader, writer = await mesh.connect()
        writer.write(frame_packet(binding(aioice_stun.Class.REQUEST, f"{mesh.ufrag()}:cli1")))
        data = await mesh.backbone()

        mesh.reply(data[:frame.header_length(data)])

        assert await closed(reader)
        assert mesh.tcp.gate.counters["closed_flow_gone"] == 1


async def test_a_udp_client_and_a_tcp_client_on_the_same_address_are_two_flows() -> None:
    async with Mesh() as mesh:
        reader, writer = await mesh.connect()
        address = writer.get_extra_info("sockname")
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(address)
        ufrag = mesh.ufrag()
        try:
            udp.sendto(binding(aioice_stun.Class.REQUEST, f"{ufrag}:cli1"), mesh.relay.public_address)
            writer.write(frame_packet(binding(aioice_stun.Class.REQUEST, f"{ufrag}:cli1")))
            headers = {(await mesh.backbone())[:12] for _ in range(2)}
            assert {frame.is_tcp(h) for h in headers} == {True, False}
            assert mesh.relay.flows.by_client.keys() == {address, tcp_key(address)}
        finally:
            udp.close()
            writer.close()


def test_the_listener_runs_under_uvloop_as_the_edge_process_does() -> None:
    """``voicemesh edge`` runs on uvloop, whose transports are not asyncio's classes."""
    import uvloop

    async def route_one() -> bytes:
        async with Mesh() as mesh:
            reader, writer = await mesh.connect()
            ufrag = mesh.ufrag()
            writer.write(frame_packet(binding(aioice_stun.Class.REQUEST, f"{ufrag}:cli1")))
            data = await mesh.backbone()
            check = binding(aioice_stun.Class.REQUEST, f"cli1:{ufrag}")
            mesh.reply(data[:frame.header_length(data)] + check)
            assert await read_packet(reader) == check
            writer.close()
            return data

    assert frame.is_tcp(uvloop.run(route_one()))


async def test_a_stalled_client_loses_media_beyond_its_send_buffer_but_never_stun() -> None:
    async with Mesh(send_buffer_bytes=4096) as mesh:
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        await asyncio.get_running_loop().sock_connect(client, mesh.tcp.address)
        reader, writer = await asyncio.open_connection(sock=client)
        ufrag = mesh.ufrag()
        writer.write(frame_packet(binding(aioice_stun.Class.REQUEST, f"{ufrag}:cli1")))
        data = await mesh.backbone()
        header = data[:frame.header_length(data)]
        check = binding(aioice_stun.Class.REQUEST, f"cli1:{ufrag}")
        mesh.reply(header + check)
        assert await read_packet(reader) == check
        writer.write(frame_packet(binding(aioice_stun.Class.RESPONSE, transaction_id=check[8:20])))
        await mesh.backbone()

        sent = 0
        while not mesh.relay.core.tcp_drops["backpressure"] and sent < 20_000:  # the client reads nothing
            for _ in range(50):
                mesh.reply(header + SRTP)
            sent += 50
            await asyncio.sleep(0.001)
        consent = binding(aioice_stun.Class.REQUEST, f"cli1:{ufrag}")
        mesh.reply(header + consent)
        await asyncio.sleep(0.05)

        assert mesh.relay.core.tcp_drops["backpressure"] > 0
        packets = []
        while consent not in packets:
            packets.append(await read_packet(reader))
        assert set(packets[:-1]) == {SRTP} and len(packets) - 1 < sent, "media was dropped, the check was not"
        writer.close()


@pytest.mark.parametrize("tcp", [True, False])
async def test_the_answer_carries_the_edges_tcp_candidate_after_the_udp_one(tcp: bool) -> None:
    import aiohttp
    from offers import real_offer

    from voicemesh.app.demo import embedded_mesh

    async with embedded_mesh(edge_options={"relay_tcp": f"{LOOPBACK}:0"} if tcp else {}) as mesh:
        async with aiohttp.ClientSession() as http, http.post(
                f"{mesh.edge.url}/v1/sessions", data=await real_offer(),
                headers={"Content-Type": "application/sdp"}) as resp:
            assert resp.status == 201
            answer = await resp.text()
        record = mesh.edge.record

    candidates = [line.split(" ") for line in answer.splitlines() if line.startswith("a=candidate:")]
    udp_host, udp_port = record.public_relay.rsplit(":", 1)
    assert candidates[0][2:6] == ["udp", candidates[0][3], udp_host, udp_port]
    if tcp:
        tcp_host, tcp_port = record.public_relay_tcp.rsplit(":", 1)
        assert tcp_port == str(mesh.edge.tcp.address[1])
        assert [c[2] for c in candidates] == ["udp", "tcp"]
        assert candidates[1][4:] == [tcp_host, tcp_port, "typ", "host", "tcptype", "passive"]
    else:
        assert record.public_relay_tcp == "" and [c[2] for c in candidates] == ["udp"]


async def test_an_aiortc_caller_on_udp_is_not_disturbed_by_the_tcp_candidate() -> None:
    """aioice (the test client, the load and fault callers) pairs no UDP candidate with the TCP one."""
    from voicemesh.app.client import call
    from voicemesh.app.demo import bundled_speech, embedded_mesh

    async with embedded_mesh(edge_options={"relay_tcp": f"{LOOPBACK}:0"}) as mesh:
        report = await call(mesh.whip_url, bundled_speech(), bind=LOOPBACK, duration_s=2)
        stats = mesh.relay.stats()["by_transport"]

    assert report.packets_received > 50, report  # the echo's correlation is test_e2e's
    assert stats["udp"]["packets_in"] > 0 and stats["tcp"]["packets_in"] == 0 and stats["tcp"]["connections"] == 0
