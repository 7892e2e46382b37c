"""RegionalRegistry over two real etcds: one region's etcd down stops only new claims in that region."""

from __future__ import annotations

import asyncio

import pytest
from polling import eventually

from voicemesh.registry import NodeRecord, RegistryUnavailable, open_registry

pytestmark = pytest.mark.integration

EU_TRX = NodeRecord("transceiver", "eu-central", "trx-eu", capacity=10, http="http://eu")
US_TRX = NodeRecord("transceiver", "us-east", "trx-us", capacity=10, http="http://us")
FRA_EDGE = NodeRecord("edge", "fra", "edge-fra", http="http://fra")


async def test_one_regions_etcd_down_stops_only_claims_in_that_region(etcd, etcd2):
    url = f"etcd://eu-central={etcd.endpoint};us-east={etcd2.endpoint}"
    eu, us, fra = (open_registry(url, region=home, lease_ttl_s=2) for home in ("eu-central", "us-east", "eu-central"))
    for registry in (eu, us, fra):
        await registry.start()
    await eu.register(EU_TRX)
    await us.register(US_TRX)
    await fra.register(FRA_EDGE)
    names = ["edge-fra", "trx-eu", "trx-us"]
    for registry in (eu, us, fra):
        await eventually(lambda r=registry: [n.node_id for n in r.nodes()] == names, "the merged view")
    live_us = await us.claim_session("live-us", US_TRX)
    await eu.claim_session("live-eu", EU_TRX)

    etcd2.kill()  # us-east's etcd
    await asyncio.sleep(3)  # longer than the lease: a naive view would drop us-east's nodes
    with pytest.raises(RegistryUnavailable):
        await us.claim_session("new-us", US_TRX)
    assert await eu.claim_session("new-eu", EU_TRX)
    assert await fra.session_owner("live-eu") == "trx-eu"
    assert [n.node_id for n in fra.nodes()] == names  # us-east's last view is held, its live calls go on
    assert live_us.key.endswith("/us-east/live-us")
    for registry in (eu, us, fra):
        await registry.close()


async def test_a_node_starts_while_another_regions_etcd_is_down(etcd, etcd2):
    etcd2.kill()
    registry = open_registry(f"etcd://eu-central={etcd.endpoint};us-east={etcd2.endpoint}", region="eu-central",
                             lease_ttl_s=2)
    await registry.start()
    await registry.register(EU_TRX)
    await eventually(lambda: [n.node_id for n in registry.nodes()] == ["trx-eu"], "the home view")
    assert await registry.claim_session("s", EU_TRX)
    await registry.close()
