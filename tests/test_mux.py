"""The backbone mux against a real call: signed checks from spoofed sources neither move the call's media nor
grow aioice's state, a session's end sends its edge the close frames, and media goes to an edge in BATCH frames
only if its registry record says it reads them. Real aiortc, real UDP, loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from collections import Counter

import pytest
from aioice import stun as aioice_stun
from polling import eventually

from voicemesh.app.client import call
from voicemesh.app.demo import LOOPBACK, bundled_speech, embedded_mesh
from voicemesh.core import hooks
from voicemesh.core.mux_core import MAX_ROUTES
from voicemesh.registry import NodeRecord
from voicemesh.wire import frame

pytestmark = pytest.mark.integration

SPOOFED = 300


def signed_check(ufrag: str, client_ufrag: str, pwd: str) -> bytes:
    """A Binding request to the transceiver (RFC 8445 7.2.2) signed with the session's pwd, as its caller can
    make: the answer SDP gives the caller both the server ufrag (the token) and the pwd."""
    msg = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST, transaction_id=os.urandom(12))
    msg.attributes["USERNAME"] = f"{ufrag}:{client_ufrag}"
    msg.attributes["PRIORITY"] = 1
    msg.attributes["ICE-CONTROLLING"] = 1
    msg.add_message_integrity(pwd.encode())
    msg.add_fingerprint()
    return bytes(msg)


async def test_spoofed_signed_checks_neither_move_the_call_nor_grow_aioice() -> None:
    """A caller who knows its token and pwd sends, through an edge, signed checks from many spoofed
    addresses: one check replayed from each, then a fresh check from each, each followed by junk media.

    The edge here is a socket of the test's, registered as an edge, which puts the spoofed addresses in the
    frame headers as a real edge would; it never answers the transceiver's checks (the spoofed addresses
    cannot). Without the route cap the session ends with hundreds of routes and aioice with hundreds of
    candidates; without route validation the junk takes the downlink.
    """
    async with embedded_mesh() as mesh:
        trx = mesh.transceiver
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as edge:
            edge.bind((LOOPBACK, 0))
            edge.setblocking(False)
            await trx.registry.register(NodeRecord(
                role="edge", region="attack", node_id="spoofing-edge", index=99,
                backbone=f"{LOOPBACK}:{edge.getsockname()[1]}"))
            while edge.getsockname() not in trx.mux.core.edges:
                await asyncio.sleep(0.01)

            async def attack() -> dict:
                while not trx.sessions or next(iter(trx.sessions.values())).pc.connectionState != "connected":
                    await asyncio.sleep(0.05)
                session = next(iter(trx.sessions.values()))
                conn = hooks.ice_connection(session.pc)
                mux_session = trx.mux.core.sessions[session.ufrag.encode()]
                caller = mux_session.active
                credentials = session.ufrag, conn.remote_username, conn.local_password
                replayed = signed_check(*credentials)
                most_routes = 0
                for fresh in (False, True):
                    for i in range(SPOOFED):
                        header = frame.encode_header((f"198.18.{i // 250}.{i % 250 + 1}", 40000 + i), 99)
                        check = signed_check(*credentials) if fresh else replayed
                        edge.sendto(header + check, trx.mux.address)
                        edge.sendto(header + b"\x80\x6f" + os.urandom(160), trx.mux.address)
                        if i % 20 == 0:
                            await asyncio.sleep(0.02)
                            most_routes = max(most_routes, len(mux_session.routes))
                await asyncio.sleep(1.0)
                return {"routes": max(most_routes, len(mux_session.routes)), "active": mux_session.active,
                        "caller": caller, "candidates": len(conn.remote_candidates),
                        "pairs": len(conn._check_list)}

            report, seen = await asyncio.gather(
                call(mesh.whip_url, bundled_speech(), bind=LOOPBACK), attack())
        counters = trx.mux.counters
        assert report.ok, report.error
        assert report.correlation is not None and report.correlation > 0.5
        assert report.packets_received > 100
        assert seen["active"] is seen["caller"], "the downlink never left the caller's path"
        assert seen["routes"] <= MAX_ROUTES
        assert seen["candidates"] <= MAX_ROUTES and seen["pairs"] <= MAX_ROUTES, "aioice holds no more addresses"
        assert counters["replay"] == SPOOFED - 1
        assert counters["route_evicted"] >= SPOOFED + 1 - MAX_ROUTES
        assert counters["unproven_media"] == SPOOFED + 1, "junk after every check that opened a route"
        assert trx.mux.core.events["route_switched"] == 0


async def test_a_session_end_sends_its_edge_a_close_frame_per_route() -> None:
    """The contract with the edge relay: when a session ends, each of its routes gets a frame with the
    route's header and an empty payload, sent to that route's edge."""
    async with embedded_mesh() as mesh:
        trx = mesh.transceiver
        closes: list[tuple[bytes, tuple[str, int]]] = []
        send = trx.mux._sendto

        def record(data: bytes, edge: tuple[str, int]) -> None:
            if not frame.is_control(data) and frame.header_length(data) == len(data):
                closes.append((data, edge))
            send(data, edge)

        trx.mux._sendto = record
        report = await call(mesh.whip_url, bundled_speech(), bind=LOOPBACK, duration_s=2.0)
        assert report.ok, report.error
        while trx.sessions:
            await asyncio.sleep(0.05)
        [(data, edge)] = closes
        (ip, _port), edge_id, _ = frame.decode(data)
        assert (ip, edge) == (LOOPBACK, mesh.relay.backbone_address)
        assert len(trx.mux.core) == 0


async def test_media_goes_in_batch_frames_to_an_edge_that_reads_them_and_alone_to_one_that_does_not() -> None:
    """Two calls at once: the agent's downlink carries both calls' packets together, so the lean path's media
    to the edge (its record says ``backbone_batch``) goes in BATCH frames, and both echoes carry their clip.
    Once the edge's record no longer says so (an edge of an earlier version), every frame travels alone."""
    async with embedded_mesh() as mesh:
        trx = mesh.transceiver
        sent: Counter[str] = Counter()
        send = trx.mux._sendto

        def record(data: bytes, edge: tuple[str, int]) -> None:
            sent["batch" if frame.is_control(data) else "alone"] += 1
            send(data, edge)

        async def two_calls() -> None:
            reports = await asyncio.gather(*(call(mesh.whip_url, bundled_speech(), bind=LOOPBACK, duration_s=2.0)
                                             for _ in range(2)))
            assert all(report.ok for report in reports), [report.error for report in reports]

        trx.mux._sendto = record
        await two_calls()
        assert sent["batch"] > 0 and trx.mux.counters["tx_batched"] > sent["batch"]

        await mesh.edge.registry.register(dataclasses.replace(mesh.edge.record, backbone_batch=False))
        await eventually(lambda: not trx.mux.batch_edges, "the transceiver to read the record")
        sent.clear()
        batched = trx.mux.counters["tx_batched"]
        await two_calls()
        assert sent["batch"] == 0 and sent["alone"] > 0 and trx.mux.counters["tx_batched"] == batched
