"""EtcdRegistry against a real etcd: membership via leases and the watched view, claims in transactions."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from etcd3aio import Etcd3Client
from polling import eventually

from voicemesh.registry import AlreadyClaimed, NodeRecord, RegistryUnavailable, open_registry
from voicemesh.registry.etcd import EtcdRegistry

pytestmark = pytest.mark.integration

EDGE = NodeRecord("edge", "eu-west", "edge-1", index=1, http="http://127.0.0.1:8081", capacity=100)
TRANSCEIVER = NodeRecord("transceiver", "eu-west", "tx-1", capacity=50)
REPO = Path(__file__).resolve().parent.parent

# A node process that registers EDGE on a 2 s lease, says so, and sleeps until it is killed.
DOOMED_NODE = """
import asyncio, sys
from voicemesh.registry.etcd import EtcdRegistry
from voicemesh.registry import NodeRecord

async def main():
    registry = EtcdRegistry([sys.argv[1]], lease_ttl_s=2)
    await registry.start()
    await registry.register(NodeRecord("edge", "eu-west", "doomed"))
    print("registered", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture
async def registries(etcd):
    """``make(**kwargs)`` returns a started EtcdRegistry on the test's etcd; all are closed at the end."""
    opened: list[EtcdRegistry] = []

    async def make(**kwargs) -> EtcdRegistry:
        registry = EtcdRegistry([etcd.endpoint], **kwargs)
        await registry.start()
        opened.append(registry)
        return registry

    yield make
    for registry in opened:
        await registry.close()


@pytest.fixture
async def raw(etcd):
    """A plain etcd3aio client, to look at etcd behind the registry's back."""
    async with Etcd3Client([etcd.endpoint]) as client:
        yield client


async def test_a_registered_node_is_watched_updated_and_removed(registries):
    edge, transceiver = await registries(), await registries()
    changes = []
    transceiver.subscribe(lambda: changes.append(len(transceiver.nodes())))

    await edge.register(EDGE)
    await eventually(lambda: transceiver.nodes("edge") == [EDGE], "the edge in the transceiver's view")

    await edge.register(dataclasses.replace(EDGE, load=7))
    await eventually(lambda: transceiver.nodes("edge")[0].load == 7, "the load update")

    await edge.close()
    await eventually(lambda: transceiver.nodes() == [], "the edge to leave the view")
    assert changes == [1, 1, 0]


async def test_start_loads_the_existing_nodes(registries):
    await (await registries()).register(TRANSCEIVER)
    assert (await registries()).nodes() == [TRANSCEIVER]


async def test_the_keys_of_a_dead_process_vanish_after_the_lease_ttl(etcd, registries):
    observer = await registries()
    node = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DOOMED_NODE, etcd.endpoint, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert await node.stdout.readline() == b"registered\n"
        await eventually(lambda: [n.node_id for n in observer.nodes()] == ["doomed"], "the node to appear")
        node.kill()
        await node.wait()
        await eventually(lambda: observer.nodes() == [], "the dead node's lease to expire")
        assert observer.held_records == 0, "a node that died alone leaves at once, not after a hold (issue 11)"
    finally:
        if node.returncode is None:
            node.kill()
            await node.wait()


async def test_a_lost_lease_is_replaced_and_the_node_registered_again(registries, raw):
    edge, observer = await registries(lease_ttl_s=2), await registries()
    await edge.register(EDGE)
    await eventually(lambda: observer.nodes() == [EDGE], "the edge to appear")
    old_lease = (await raw.kv.get(EDGE.key)).kvs[0].lease

    await raw.lease.revoke(old_lease)
    await eventually(lambda: observer.nodes() == [], "the revoked lease to delete the edge")
    await eventually(lambda: observer.nodes() == [EDGE], "the edge to register again")
    assert (await raw.kv.get(EDGE.key)).kvs[0].lease != old_lease


async def test_an_etcd_outage_longer_than_the_lease_keeps_the_view_and_the_nodes_register_again(etcd, registries, raw):
    """etcd frozen (SIGSTOP) for 3x the lease TTL expires every lease, the observer's too: the node's record is
    held in the observer's view until the node registers it again on a new lease, so the view never loses it."""
    node, observer = await registries(lease_ttl_s=2), await registries(lease_ttl_s=2)
    await node.register(TRANSCEIVER)
    await eventually(lambda: observer.nodes() == [TRANSCEIVER], "the node to appear")
    old_lease = (await raw.kv.get(TRANSCEIVER.key)).kvs[0].lease
    views, renewed = [], []
    observer.subscribe(lambda: views.append(observer.nodes()))
    node.subscribe_lease(lambda: renewed.append(True))

    etcd.process.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(3 * node.lease_ttl_s)
    finally:
        etcd.process.send_signal(signal.SIGCONT)
    await eventually(lambda: renewed and observer.held_records and not observer._held, "the node to register again")

    assert (await raw.kv.get(TRANSCEIVER.key)).kvs[0].lease != old_lease, "the outage expired the old lease"
    assert all(view == [TRANSCEIVER] for view in views), "the view never lost the node"
    assert observer.nodes() == [TRANSCEIVER]


async def test_a_node_that_does_not_come_back_after_an_outage_leaves_the_view(etcd, registries, raw):
    node, observer = await registries(lease_ttl_s=2), await registries(lease_ttl_s=2)
    await node.register(TRANSCEIVER)
    await eventually(lambda: observer.nodes() == [TRANSCEIVER], "the node to appear")
    for task in node._tasks:  # the node hangs: it keeps no lease and registers nothing again
        task.cancel()

    etcd.process.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(3 * node.lease_ttl_s)
    finally:
        etcd.process.send_signal(signal.SIGCONT)
    await eventually(lambda: observer.held_records, "the record to be held")
    await eventually(lambda: observer.nodes() == [], "the held record to leave")
    assert (await raw.kv.get(TRANSCEIVER.key)).kvs == []


async def test_a_dead_endpoint_in_the_list_is_skipped(etcd):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{closed.getsockname()[1]}"
    registry = EtcdRegistry([dead, etcd.endpoint])
    await registry.start()
    try:
        claims = [await registry.claim(f"/voicemesh/v1/sessions/s{i}", b"mine") for i in range(10)]
        assert len({claim.revision for claim in claims}) == 10
    finally:
        await registry.close()


async def test_concurrent_claims_have_exactly_one_winner(registries):
    instances = [await registries() for _ in range(4)]
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
    registry = await registries()
    first = await registry.claim("/voicemesh/v1/sessions/s1", b"token-a")
    again = await registry.claim("/voicemesh/v1/sessions/s1", b"token-a")
    assert first == again
    with pytest.raises(AlreadyClaimed) as caught:
        await registry.claim("/voicemesh/v1/sessions/s1", b"token-b")
    assert caught.value.owner == b"token-a"


async def test_release_is_fenced_by_the_claim_revision(registries, raw):
    registry = await registries()
    old = await registry.claim("/voicemesh/v1/sessions/s1", b"a")
    assert await registry.release(old)
    new = await registry.claim("/voicemesh/v1/sessions/s1", b"b")
    assert new.revision > old.revision
    assert not await registry.release(old)
    assert (await raw.kv.get(new.key)).kvs[0].value == b"b"
    assert await registry.release(new)
    assert not await registry.release(new)


async def test_concurrent_index_allocations_are_distinct(registries):
    instances = [await registries() for _ in range(5)]
    indexes = await asyncio.gather(
        *(instance.allocate_index("edge", "eu-west") for instance in instances for _ in range(2))
    )
    assert sorted(indexes) == list(range(1, 11))


async def _index_taken_while_our_lease_is_gone(node: EtcdRegistry, raw, holder_ttl_s: int) -> tuple[str, bytes]:
    """Allocate an edge index on ``node``, then do what an etcd restore (or another node starting during an
    outage) does to it: the index key passes to another claim on a lease of its own (``holder_ttl_s``), and
    ``node``'s lease is revoked. Returns (index key, ``node``'s claim token)."""
    index = await node.allocate_index("edge", "eu-west")
    key = f"/voicemesh/v1/index/edge/eu-west/{index}"
    ours = (await raw.kv.get(key)).kvs[0]
    holder = await raw.lease.grant(holder_ttl_s)
    await raw.kv.put(key, b"restored-claim", lease=holder.ID)
    await raw.lease.revoke(ours.lease)
    return key, ours.value


async def test_an_index_held_by_a_restored_claim_is_claimed_again_when_that_lease_expires(registries, raw, caplog):
    """A restored snapshot brings back a gone host's claim on our index, alive for one TTL: the node re-registers,
    finds the index held, and claims it again once that lease expires, without giving it up."""
    caplog.set_level(logging.WARNING, "voicemesh.registry")
    node = await registries(lease_ttl_s=2)
    lost: list[str] = []
    node.subscribe_index_lost(lost.append)
    await node.register(EDGE)
    key, token = await _index_taken_while_our_lease_is_gone(node, raw, holder_ttl_s=4)

    deadline = time.monotonic() + 20.0
    while (again := (await raw.kv.get(key)).kvs) == [] or again[0].value != token:
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the node to claim its index again")
        await asyncio.sleep(0.05)

    assert any("is held by another node" in r.getMessage() for r in caplog.records), "the claim was contested"
    assert again[0].lease == (await raw.kv.get(EDGE.key)).kvs[0].lease, "on the node's new lease"
    assert lost == []


async def test_an_index_another_live_node_holds_is_given_up_and_signalled(registries, raw):
    """Another node took the index while our lease was gone and keeps it: after a few lease TTLs the registry
    gives the index up and tells its subscribers (the CLI drains and exits); it never claims it again."""
    node = await registries(lease_ttl_s=2)
    lost: list[str] = []
    node.subscribe_index_lost(lost.append)
    await node.register(EDGE)
    key, _token = await _index_taken_while_our_lease_is_gone(node, raw, holder_ttl_s=600)

    await eventually(lambda: lost, "the registry to give the index up")

    assert lost == [key]
    assert key not in node._indexes, "a later lease renewal does not claim it again"
    assert (await raw.kv.get(key)).kvs[0].value == b"restored-claim", "the holder keeps it"
    assert (await raw.kv.get(EDGE.key)).kvs, "the node's record stays registered while it drains"


async def test_claims_are_attached_to_the_lease(registries, raw):
    holder, other = await registries(), await registries()
    claim = await holder.claim_session("s1", TRANSCEIVER)
    assert (await raw.kv.get(claim.key)).kvs[0].lease != 0
    await holder.close()
    assert (await raw.kv.get(claim.key)).kvs == []
    assert (await other.claim_session("s1", TRANSCEIVER)).revision > claim.revision


async def test_calls_fail_with_registry_unavailable_when_etcd_is_gone(etcd, registries):
    registry = await registries(timeout_s=1.0)
    etcd.kill()
    with pytest.raises(RegistryUnavailable, match="claim /voicemesh/v1/sessions/eu-west/s1"):
        await registry.claim_session("s1", TRANSCEIVER)
    with pytest.raises(RegistryUnavailable):
        await registry.register(EDGE)


async def test_start_fails_with_registry_unavailable_when_etcd_is_gone(etcd):
    etcd.kill()
    with pytest.raises(RegistryUnavailable, match="Lease.Grant"):
        await open_registry(etcd.url).start()


def test_lease_ttl_below_two_seconds_is_refused():
    with pytest.raises(ValueError, match="lease_ttl_s"):
        EtcdRegistry(["127.0.0.1:2379"], lease_ttl_s=1)
