"""The edge's warm connections to transceivers (edge/whip.py): a connection is open before the first offer,
and the offer goes out on it, without a TCP handshake over the backbone (embedded mesh: real HTTP and aiortc)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace

import aiohttp
import pytest
from offers import real_offer

from voicemesh.app.demo import LOOPBACK, embedded_mesh
from voicemesh.core import api
from voicemesh.core.config import TransceiverConfig
from voicemesh.core.transceiver import Transceiver
from voicemesh.edge import whip
from voicemesh.registry import MemoryRegistry
from voicemesh.runtime.http import HTTP_COUNTERS
from voicemesh.wire.hopauth import HopVerifier
from voicemesh.wire.signaling import SDP_TYPE

pytestmark = pytest.mark.integration


async def test_an_offer_goes_out_on_the_connection_the_edge_opened_before_it(monkeypatch) -> None:
    # Warming passes: one as the edge starts, then only the one this test runs, so none competes with the offer.
    monkeypatch.setattr(whip, "WARM_INTERVAL_S", 3600.0)
    async with embedded_mesh(capacity=0) as mesh:  # its own transceiver is full: offers go to the new one
        registry = MemoryRegistry(mesh.transceiver.registry.store)
        await registry.start()
        trx = Transceiver(TransceiverConfig(node_id="trx-new", agent=mesh.transceiver.config.agent,
                                            backbone=f"{LOOPBACK}:0", capacity=5, drain_timeout_s=0),
                          registry, mesh.tokens)
        runner = await api.serve(trx, HopVerifier(mesh.keys), LOOPBACK, 0)
        counters = runner.app[HTTP_COUNTERS]
        front = mesh.edge._whip
        assert front is not None and front._warming is not None  # the app started the warming loop
        try:
            while not any(n.node_id == "trx-new" for n in mesh.edge.registry.nodes("transceiver")):
                await asyncio.sleep(0.02)
            await front.warm()
            assert (counters["connections"], counters["requests"]) == (1, 1) and not trx.sessions
            async with aiohttp.ClientSession() as http:
                async with http.post(mesh.whip_url, data=await real_offer(), headers={"Content-Type": SDP_TYPE}) as resp:
                    assert resp.status == 201, await resp.text()
            assert len(trx.sessions) == 1
            assert (counters["connections"], counters["requests"]) == (1, 2)  # the offer took the open connection
        finally:
            await runner.cleanup()
            await trx.close()
            await registry.close()


async def test_a_transceiver_that_does_not_answer_the_warming_is_tried_last(monkeypatch) -> None:
    monkeypatch.setattr(whip, "WARM_INTERVAL_S", 3600.0)
    async with embedded_mesh() as mesh:
        probe = socket.socket()
        probe.bind((LOOPBACK, 0))  # a port nothing listens on: a crashed transceiver's
        dead_url = f"http://{LOOPBACK}:{probe.getsockname()[1]}"
        registry = MemoryRegistry(mesh.transceiver.registry.store)
        await registry.start()
        await registry.register(replace(mesh.transceiver.record, node_id="trx-dead", index=99, http=dead_url))
        try:
            while not any(n.node_id == "trx-dead" for n in mesh.edge.registry.nodes("transceiver")):
                await asyncio.sleep(0.02)
            front = mesh.edge._whip
            assert front is not None
            await front.warm()
            assert "trx-dead" in front._unreachable and mesh.transceiver.config.node_id not in front._unreachable
        finally:
            probe.close()
            await registry.close()
