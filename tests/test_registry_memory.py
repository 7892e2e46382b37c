"""MemoryRegistry on a shared MemoryStore: the registry contract without etcd, plus NodeRecord and open_registry."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from voicemesh.registry import (
    AlreadyClaimed,
    BadRegistryUrl,
    InvalidName,
    MalformedRecord,
    MemoryRegistry,
    MemoryStore,
    NodeRecord,
    NoFreeIndex,
    named_store,
    open_registry,
)

pytestmark = pytest.mark.unit

EDGE = NodeRecord("edge", "eu-west", "edge-1", index=1, region_id=3, http="http://127.0.0.1:8081",
                  backbone="127.0.0.1:7000", public_relay="192.0.2.1:3478", capacity=100, lat=53.3, lon=-6.2)
TRANSCEIVER = NodeRecord("transceiver", "eu-west", "tx-1", capacity=50)


@pytest.fixture
async def registries():
    """``make(store)`` returns a started MemoryRegistry on ``store``; all are closed at the end."""
    opened: list[MemoryRegistry] = []

    async def make(store: MemoryStore) -> MemoryRegistry:
        registry = MemoryRegistry(store)
        await registry.start()
        opened.append(registry)
        return registry

    yield make
    for registry in opened:
        await registry.close()


def test_node_record_round_trips_through_json():
    assert NodeRecord.from_json(EDGE.to_json()) == EDGE
    assert EDGE.key == "/voicemesh/v1/nodes/edge/eu-west/edge-1"


def test_node_record_ignores_unknown_keys_and_defaults_missing_ones():
    data = json.dumps({"role": "agent", "region": "us-east", "node_id": "a", "gpu": "h100"}).encode()
    assert NodeRecord.from_json(data) == NodeRecord("agent", "us-east", "a")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{nope", "json"),
        (b"[1, 2]", "json"),
        (b'{"role": "edge", "region": "eu-west"}', "fields"),
        (b'{"role": "edge", "region": "eu-west", "node_id": "e", "load": "high"}', "fields"),
    ],
)
def test_malformed_node_records_raise_a_typed_error(data, reason):
    with pytest.raises(MalformedRecord) as caught:
        NodeRecord.from_json(data)
    assert caught.value.reason == reason


def test_names_must_be_single_key_segments():
    with pytest.raises(InvalidName) as caught:
        NodeRecord("edge", "eu/west", "e")
    assert caught.value.reason == "slash_in_name"
    with pytest.raises(InvalidName) as caught:
        NodeRecord("edge", "eu-west", "")
    assert caught.value.reason == "empty_name"


async def test_a_registered_node_is_seen_updated_and_removed_by_another_instance(registries):
    store = MemoryStore()
    edge, transceiver = await registries(store), await registries(store)
    changes = []
    transceiver.subscribe(lambda: changes.append(len(transceiver.nodes())))

    await edge.register(EDGE)
    await transceiver.register(TRANSCEIVER)
    assert transceiver.nodes("edge") == [EDGE]
    assert edge.nodes() == [EDGE, TRANSCEIVER]

    await edge.register(dataclasses.replace(EDGE, load=7, draining=True))
    assert transceiver.nodes("edge")[0].load == 7
    assert transceiver.nodes("edge")[0].draining

    await edge.close()
    assert transceiver.nodes("edge") == []
    assert changes == [1, 2, 2, 1]


async def test_a_late_starter_sees_existing_nodes(registries):
    store = MemoryStore()
    await (await registries(store)).register(EDGE)
    assert (await registries(store)).nodes() == [EDGE]


async def test_concurrent_claims_have_exactly_one_winner(registries):
    store = MemoryStore()
    instances = [await registries(store) for _ in range(4)]
    owners = [NodeRecord("transceiver", "eu-west", f"tx-{i}") for i in range(20)]
    results = await asyncio.gather(
        *(instances[i % 4].claim_session("s1", owner) for i, owner in enumerate(owners)), return_exceptions=True
    )
    winners = [result for result in results if not isinstance(result, BaseException)]
    assert len(winners) == 1
    losers = [result for result in results if isinstance(result, AlreadyClaimed)]
    assert len(losers) == 19
    assert {loser.owner for loser in losers} == {winners[0].value}
    assert json.loads(winners[0].value)["owner"] in {owner.node_id for owner in owners}


async def test_a_retried_claim_with_the_same_value_is_a_win(registries):
    registry = await registries(MemoryStore())
    first = await registry.claim("/voicemesh/v1/sessions/s1", b"token-a")
    again = await registry.claim("/voicemesh/v1/sessions/s1", b"token-a")
    assert first == again
    with pytest.raises(AlreadyClaimed) as caught:
        await registry.claim("/voicemesh/v1/sessions/s1", b"token-b")
    assert caught.value.owner == b"token-a"


async def test_release_is_fenced_by_the_claim_revision(registries):
    store = MemoryStore()
    registry = await registries(store)
    old = await registry.claim("/voicemesh/v1/sessions/s1", b"a")
    assert await registry.release(old)
    new = await registry.claim("/voicemesh/v1/sessions/s1", b"b")
    assert new.revision > old.revision
    assert not await registry.release(old)
    assert store.get("/voicemesh/v1/sessions/s1").value == b"b"
    assert await registry.release(new)
    assert not await registry.release(new)


async def test_concurrent_index_allocations_are_distinct(registries):
    store = MemoryStore()
    instances = [await registries(store) for _ in range(5)]
    indexes = await asyncio.gather(*(instance.allocate_index("edge", "eu-west") for instance in instances))
    assert sorted(indexes) == [1, 2, 3, 4, 5]
    assert await instances[0].allocate_index("edge", "us-east") == 1

    await instances[indexes.index(2)].close()
    assert await (await registries(store)).allocate_index("edge", "eu-west") == 2


async def test_allocate_index_raises_when_all_are_taken(registries):
    registry = await registries(MemoryStore())
    await registry.allocate_index("edge", "eu-west", limit=2)
    await registry.allocate_index("edge", "eu-west", limit=2)
    with pytest.raises(NoFreeIndex):
        await registry.allocate_index("edge", "eu-west", limit=2)


async def test_claims_are_attached_to_the_lease(registries):
    store = MemoryStore()
    holder, other = await registries(store), await registries(store)
    await holder.claim_session("s1", TRANSCEIVER)
    with pytest.raises(AlreadyClaimed):
        await other.claim_session("s1", TRANSCEIVER)
    await holder.close()
    assert store.get(f"/voicemesh/v1/sessions/{TRANSCEIVER.region}/s1") is None
    assert (await other.claim_session("s1", TRANSCEIVER)).key == f"/voicemesh/v1/sessions/{TRANSCEIVER.region}/s1"


def test_store_revisions_increase_on_every_write():
    store = MemoryStore()
    lease = store.grant()
    assert store.put("/a", b"1", lease) == 1
    assert store.put("/a", b"2", lease) == 2
    assert store.get("/a").create_revision == 1
    store.revoke(lease)
    assert store.revision == 3
    assert store.get("/a") is None


async def test_open_registry_memory_urls():
    private = open_registry("memory://")
    assert isinstance(private, MemoryRegistry)
    assert private.store is not open_registry("memory://").store
    shared = open_registry("memory://test-open-registry")
    assert shared.store is named_store("test-open-registry") is open_registry("memory://test-open-registry").store


def test_open_registry_etcd_urls():
    from voicemesh.registry.etcd import EtcdRegistry

    assert isinstance(open_registry("etcd://127.0.0.1:2379,10.0.0.2:2379"), EtcdRegistry)
    for url, reason in [
        ("redis://127.0.0.1:6379", "scheme"),
        ("etcd://", "endpoints"),
        ("etcd://127.0.0.1", "endpoints"),
        ("etcd://127.0.0.1:port", "endpoints"),
    ]:
        with pytest.raises(BadRegistryUrl) as caught:
            open_registry(url)
        assert caught.value.reason == reason
