"""Region failover at the edge, against two real etcds (one per core region), real transceivers and real
WebRTC offers: a region whose etcd is down cannot claim sessions, and the edge sends new offers to the next
region by backbone RTT; a pin reaches any region from any edge."""

from __future__ import annotations

import asyncio
import secrets
from contextlib import AsyncExitStack

import aiohttp
import pytest
from offers import real_offer

from voicemesh.core import api, echo_agent
from voicemesh.core.config import TransceiverConfig
from voicemesh.core.transceiver import Transceiver
from voicemesh.edge.config import EdgeConfig
from voicemesh.edge.node import EdgeNode
from voicemesh.registry import open_registry
from voicemesh.wire.hopauth import HopVerifier
from voicemesh.wire.meshkeys import MeshKeys
from voicemesh.wire.signaling import SDP_TYPE
from voicemesh.wire.token import TokenCodec

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
REGIONS = {"eu-central": (1, 50.11, 8.68), "us-east": (2, 39.04, -77.49)}


async def post(url: str, body: str, headers: dict | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers={"Content-Type": SDP_TYPE, **(headers or {})}) as resp:
            return resp.status, resp.headers.get("Location", "")


async def test_offers_fail_over_to_the_next_region_when_a_regions_etcd_is_down(etcd, etcd2):
    url = f"etcd://eu-central={etcd.endpoint};us-east={etcd2.endpoint}"
    keys = MeshKeys({1: secrets.token_bytes(32)}, 1)
    tokens = TokenCodec.from_mesh_keys(keys)
    async with AsyncExitStack() as stack:
        agent_server, agent_port = await echo_agent.serve(f"{LOOPBACK}:0", None)
        stack.push_async_callback(agent_server.stop, 0.5)
        transceivers = {}
        for region, (region_id, lat, lon) in REGIONS.items():
            registry = open_registry(url, region=region, lease_ttl_s=2)
            await registry.start()
            stack.push_async_callback(registry.close)
            trx = Transceiver(TransceiverConfig(node_id=f"trx-{region}", region=region, region_id=region_id, lat=lat,
                                                lon=lon, agent=f"{LOOPBACK}:{agent_port}", backbone=f"{LOOPBACK}:0",
                                                capacity=5, drain_timeout_s=0), registry, tokens)
            stack.push_async_callback(trx.close)
            runner = await api.serve(trx, HopVerifier(keys), LOOPBACK, 0)
            stack.push_async_callback(runner.cleanup)
            transceivers[region] = trx
        edge_registry = open_registry(url, region="eu-central", lease_ttl_s=2)
        await edge_registry.start()
        stack.push_async_callback(edge_registry.close)
        edge = EdgeNode(EdgeConfig(node_id="edge-lon", region="lon", lat=51.51, lon=-0.13, public=f"{LOOPBACK}:0",
                                   backbone=f"{LOOPBACK}:0", http=f"{LOOPBACK}:0",
                                   region_rtt_ms="eu-central=15,us-east=75"), edge_registry, keys)
        stack.push_async_callback(edge.close)
        await edge.start()
        whip = f"{edge.url}/v1/sessions"
        while len(edge_registry.nodes("transceiver")) < 2:
            await asyncio.sleep(0.02)

        assert (await post(whip, await real_offer()))[0] == 201
        assert len(transceivers["eu-central"].sessions) == 1
        assert (await post(whip + "?region=us-east", await real_offer()))[0] == 201
        assert (await post(whip, await real_offer(), {"Voicemesh-Region": "us-east"}))[0] == 201
        assert len(transceivers["us-east"].sessions) == 2

        etcd.kill()  # eu-central's registry: its transceiver can no longer claim a session
        status, _ = await post(whip, await real_offer())
        assert status == 201
        assert len(transceivers["us-east"].sessions) == 3 and len(transceivers["eu-central"].sessions) == 1
        async with aiohttp.ClientSession() as http, http.get(f"{edge.url}/v1/status") as resp:
            assert (await resp.json())["whip"]["region_failover"] == 1
