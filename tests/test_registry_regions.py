"""RegionalRegistry: one cluster per core region, claims in the owner's region, a merged view of all nodes."""

from __future__ import annotations

import asyncio

import pytest

from voicemesh.registry import BadRegistryUrl, MemoryRegistry, MemoryStore, NodeRecord, open_registry
from voicemesh.registry.regions import RegionalRegistry, claim_region

pytestmark = pytest.mark.unit

EU_TRX = NodeRecord("transceiver", "eu-central", "trx-eu", capacity=10, http="http://eu")
US_TRX = NodeRecord("transceiver", "us-east", "trx-us", capacity=10, http="http://us")
NYC_EDGE = NodeRecord("edge", "nyc", "edge-nyc", http="http://nyc")


def regional(home: str, stores: dict[str, MemoryStore]) -> RegionalRegistry:
    return RegionalRegistry(home, {region: MemoryRegistry(store) for region, store in stores.items()})


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_only_session_claims_name_their_cluster():
    assert claim_region("/voicemesh/v1/sessions/us-east/abc") == "us-east"
    assert claim_region("/voicemesh/v1/sessions/us-east/") is None
    assert claim_region("/voicemesh/v1/index/edge/nyc/1") is None
    assert claim_region("/voicemesh/v1/nodes/transceiver/us-east/t") is None


def test_a_per_region_url_opens_one_cluster_per_region():
    registry = open_registry("etcd://eu-central=127.0.0.1:1,127.0.0.1:2;us-east=127.0.0.1:3", region="us-east")
    assert isinstance(registry, RegionalRegistry)
    assert registry.home == "us-east" and sorted(registry.clusters) == ["eu-central", "us-east"]
    for bad in ("etcd://eu=127.0.0.1:1;eu=127.0.0.1:2", "etcd://=127.0.0.1:1", "etcd://eu=nohost"):
        with pytest.raises(BadRegistryUrl):
            open_registry(bad)
    with pytest.raises(BadRegistryUrl):
        open_registry("etcd://eu=127.0.0.1:1", region="us-east")


async def test_every_region_sees_every_regions_nodes_and_claims_stay_local():
    stores = {"eu-central": MemoryStore(), "us-east": MemoryStore()}
    eu, us = regional("eu-central", stores), regional("us-east", stores)
    await eu.start()
    await us.start()
    await eu.register(EU_TRX)
    await us.register(US_TRX)
    await us.register(NYC_EDGE)
    await settle()
    for registry in (eu, us):
        assert [n.node_id for n in registry.nodes()] == ["edge-nyc", "trx-eu", "trx-us"]
    claim = await us.claim_session("s1", US_TRX)
    assert stores["us-east"].get(claim.key) is not None and stores["eu-central"].get(claim.key) is None
    assert await eu.session_owner("s1") == "trx-us"
    assert await eu.allocate_index("edge", "fra") == 1
    assert stores["eu-central"].range("/voicemesh/v1/index/edge/fra/")
    await eu.close()
    await us.close()


async def test_a_cluster_speaks_only_for_its_own_regions_transceivers():
    """Without the rule, a transceiver record written into another region's cluster would join the view."""
    stores = {"eu-central": MemoryStore(), "us-east": MemoryStore()}
    planter = MemoryRegistry(stores["eu-central"])
    await planter.start()
    await planter.register(US_TRX)
    registry = regional("us-east", stores)
    await registry.start()
    await settle()
    assert registry.nodes("transceiver") == []
    assert registry.foreign_records == 1
    with pytest.raises(ValueError):
        await registry.register(EU_TRX)
    await registry.close()
    await planter.close()


def test_the_home_clusters_index_loss_reaches_the_regional_registrys_subscribers():
    """The home cluster's client claims the index (allocate_index goes home) and gives it up after a lost lease;
    the node subscribes on the RegionalRegistry, so the signal has to pass through it."""
    stores = {"eu-central": MemoryStore(), "us-east": MemoryStore()}
    registry = regional("eu-central", stores)
    lost: list[str] = []
    registry.subscribe_index_lost(lost.append)
    registry.clusters["eu-central"]._index_lost("/voicemesh/v1/index/transceiver/eu-central/1")
    assert lost == ["/voicemesh/v1/index/transceiver/eu-central/1"]
