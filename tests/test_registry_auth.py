"""The registry against a real etcd serving TLS with client certificates and auth on (registry/access.py,
registry/etcd_auth.py): each part writes what its role allows and nothing else, and a call goes through with
every part on its own certificate, the agent link over mutual TLS."""

from __future__ import annotations

import asyncio
import secrets
from contextlib import AsyncExitStack

import pytest

from voicemesh.agent import tls
from voicemesh.app.client import call
from voicemesh.app.demo import bundled_speech
from voicemesh.core import api, echo_agent
from voicemesh.core.config import TransceiverConfig
from voicemesh.core.transceiver import Transceiver
from voicemesh.edge.config import EdgeConfig
from voicemesh.edge.node import EdgeNode
from voicemesh.registry import NodeRecord, RegistryForbidden, RegistryUnavailable, open_registry
from voicemesh.registry.access import Identity
from voicemesh.registry.etcd_auth import ensure_access, remove_access
from voicemesh.wire.hopauth import HopVerifier
from voicemesh.wire.meshkeys import MeshKeys
from voicemesh.wire.token import TokenCodec

pytestmark = pytest.mark.integration

EDGE = Identity("edge", "fra", "edge-1")
OTHER_EDGE = Identity("edge", "fra", "edge-2")
TRX = Identity("transceiver", "eu", "trx-1")
AGENT = Identity("agent", "eu", "agent-1")
DNS = Identity("dns")
NODES = [EDGE, OTHER_EDGE, TRX, AGENT, DNS]


@pytest.fixture
async def mesh_etcd(secure_etcd):
    """The secure etcd after ``registry init`` for NODES."""
    await ensure_access([secure_etcd.endpoint], secure_etcd.tls("root"), NODES)
    return secure_etcd


@pytest.fixture
async def as_user(mesh_etcd):
    """``await as_user(user)``: a started registry on ``user``'s certificate; closed at teardown."""
    opened = []

    async def start(user: str):
        registry = open_registry(mesh_etcd.url, lease_ttl_s=2, tls=mesh_etcd.tls(user))
        await registry.start()
        opened.append(registry)
        return registry

    yield start
    for registry in opened:
        await registry.close()


def record(identity: Identity, **fields) -> NodeRecord:
    return NodeRecord(identity.role, identity.region, identity.node_id, **fields)


async def test_init_is_idempotent(secure_etcd) -> None:
    first = await ensure_access([secure_etcd.endpoint], secure_etcd.tls("root"), NODES)
    assert set(first.users_created) == {"root", *(i.user for i in NODES)}
    again = await ensure_access([secure_etcd.endpoint], secure_etcd.tls("root"), NODES)
    assert (again.users_created, again.roles_created, again.roles_updated) == ([], [], [])


async def test_init_on_every_member_at_once_succeeds_on_each(secure_etcd) -> None:
    """Every etcd host of a region runs the registrar's init and enroll at the same time: a user or role
    that another run just created is there already, which is success; each is created once."""
    reports = await asyncio.gather(*(ensure_access([secure_etcd.endpoint], secure_etcd.tls("root"), NODES)
                                     for _ in range(3)))
    created = sorted(user for report in reports for user in report.users_created)
    assert created == sorted({"root", *(i.user for i in NODES)})
    edge = open_registry(secure_etcd.url, tls=secure_etcd.tls(EDGE.user))
    await edge.start()
    try:
        with pytest.raises(RegistryForbidden):
            await edge.register(record(TRX))
    finally:
        await edge.close()


async def test_only_root_may_change_users_once_auth_is_on(mesh_etcd) -> None:
    with pytest.raises(RegistryForbidden):
        await ensure_access([mesh_etcd.endpoint], mesh_etcd.tls(EDGE.user), [Identity("edge", "fra", "evil")])


async def test_each_part_writes_what_its_role_allows(as_user) -> None:
    edge = await as_user(EDGE.user)
    assert await edge.allocate_index("edge", "fra") == 1
    await edge.register(record(EDGE, index=1))
    trx = await as_user(TRX.user)
    assert await trx.allocate_index("transceiver", "eu") == 1
    owner = record(TRX, index=1, http="http://127.0.0.1:9")
    await trx.register(owner)
    claim = await trx.claim_session("s1", owner)
    agent = await as_user(AGENT.user)
    await agent.register(record(AGENT, grpc="127.0.0.1:50051"))
    dns = await as_user(DNS.user)
    for reader in (edge, dns):
        while len(reader.nodes()) < 3:
            await asyncio.sleep(0.02)
        assert {n.role for n in reader.nodes()} == {"edge", "transceiver", "agent"}
    assert await edge.session_owner("s1") == "trx-1"
    assert await trx.release(claim)


@pytest.mark.parametrize(("writer", "write"), [
    (EDGE, lambda r: r.register(record(TRX))),
    (EDGE, lambda r: r.register(record(OTHER_EDGE))),
    (EDGE, lambda r: r.register(record(AGENT))),
    (EDGE, lambda r: r.register(NodeRecord("edge", "lon", "edge-1"))),
    (EDGE, lambda r: r.claim_session("s1", record(TRX))),
    (EDGE, lambda r: r.allocate_index("transceiver", "eu", limit=1)),
    (TRX, lambda r: r.register(record(EDGE))),
    (TRX, lambda r: r.claim_session("s1", NodeRecord("transceiver", "us", "trx-1"))),
    (AGENT, lambda r: r.register(record(EDGE))),
    (AGENT, lambda r: r.register(record(TRX))),
    (DNS, lambda r: r.register(record(EDGE))),
    (DNS, lambda r: r.register(NodeRecord("dns", "fra", "dns-1"))),
], ids=lambda v: v.user if isinstance(v, Identity) else "")
async def test_a_write_outside_the_role_is_refused(as_user, writer, write) -> None:
    registry = await as_user(writer.user)
    with pytest.raises(RegistryForbidden, match="permission denied"):
        await write(registry)


async def test_an_edge_cannot_overwrite_or_free_a_session_claim(as_user) -> None:
    trx, edge = await as_user(TRX.user), await as_user(EDGE.user)
    claim = await trx.claim_session("s1", record(TRX))
    with pytest.raises(RegistryForbidden):
        await edge.release(claim)
    with pytest.raises(RegistryForbidden):
        await edge.claim(claim.key, b'{"owner":"evil"}')
    assert await edge.get(claim.key) == claim.value


async def test_a_removed_node_certificate_writes_and_reads_nothing(mesh_etcd, as_user) -> None:
    """``registry remove-node``: a retired transceiver's certificate (valid until it expires) can no longer
    claim its region's sessions or register; the other nodes keep their access; a second removal is a no-op."""
    trx = await as_user(TRX.user)
    owner = record(TRX, index=1, http="http://127.0.0.1:9")
    await trx.register(owner)
    report = await remove_access([mesh_etcd.endpoint], mesh_etcd.tls("root"), [TRX])
    assert (report.users_deleted, report.roles_deleted) == ([TRX.user], [TRX.user])
    with pytest.raises(RegistryForbidden):
        await trx.claim_session("s2", owner)
    retired = open_registry(mesh_etcd.url, tls=mesh_etcd.tls(TRX.user))
    with pytest.raises(RegistryForbidden):
        await retired.start()
    edge = await as_user(EDGE.user)
    await edge.register(record(EDGE, index=1))
    again = await remove_access([mesh_etcd.endpoint], mesh_etcd.tls("root"), [TRX])
    assert (again.users_deleted, again.roles_deleted) == ([], [])


async def test_removals_from_two_members_at_once_both_succeed(mesh_etcd) -> None:
    """The registrar's retire runs on every etcd host of the region at once: the one that loses a race to
    delete the user finds it gone, which is success."""
    reports = await asyncio.gather(*(remove_access([mesh_etcd.endpoint], mesh_etcd.tls("root"), [AGENT])
                                     for _ in range(3)))
    assert sorted(user for report in reports for user in report.users_deleted) == [AGENT.user]
    assert sorted(role for report in reports for role in report.roles_deleted) == [AGENT.user]


async def test_only_root_may_remove_a_node_and_never_the_shared_dns_user(mesh_etcd) -> None:
    with pytest.raises(RegistryForbidden):
        await remove_access([mesh_etcd.endpoint], mesh_etcd.tls(EDGE.user), [OTHER_EDGE])
    with pytest.raises(ValueError, match="shared"):
        await remove_access([mesh_etcd.endpoint], mesh_etcd.tls("root"), [DNS])


async def test_a_certificate_of_an_unknown_user_reads_nothing(mesh_etcd) -> None:
    stranger = open_registry(mesh_etcd.url, tls=mesh_etcd.tls("edge/fra/stranger"))
    with pytest.raises(RegistryForbidden):
        await stranger.start()


async def test_without_a_client_certificate_etcd_refuses_the_connection(mesh_etcd) -> None:
    from voicemesh.registry import RegistryTls

    anonymous = open_registry(mesh_etcd.url, tls=RegistryTls(mesh_etcd.ca.cert))
    with pytest.raises(RegistryUnavailable):
        await anonymous.start()


async def test_without_auth_an_edge_may_write_anything(secure_etcd) -> None:
    """The rule's counterpart: the same certificate before ``registry init`` (auth off) writes a transceiver."""
    edge = open_registry(secure_etcd.url, tls=secure_etcd.tls(EDGE.user))
    await edge.start()
    try:
        await edge.register(record(TRX))
    finally:
        await edge.close()


async def test_a_call_with_every_part_on_its_own_certificate(mesh_etcd, tmp_path) -> None:
    ca = mesh_etcd.ca
    ca_file = mesh_etcd.pki / "ca.pem"
    agent_cert, agent_key = ca.server(["127.0.0.1"]).write(tmp_path, "agent")
    trx_cert, trx_key = ca.client(TRX.user).write(tmp_path, "trx")
    keys = MeshKeys({1: secrets.token_bytes(32)}, 1)
    async with AsyncExitStack() as stack:
        server, port = await echo_agent.serve(
            "127.0.0.1:0", credentials=tls.server_credentials(str(agent_cert), str(agent_key), str(ca_file)))
        stack.push_async_callback(server.stop, 0.5)
        registries = {}
        for identity in (TRX, EDGE):
            registries[identity] = open_registry(mesh_etcd.url, tls=mesh_etcd.tls(identity.user))
            await registries[identity].start()
            stack.push_async_callback(registries[identity].close)
        transceiver = Transceiver(
            TransceiverConfig(node_id=TRX.node_id, region=TRX.region, agent=f"127.0.0.1:{port}",
                              backbone="127.0.0.1:0", drain_timeout_s=0),
            registries[TRX], TokenCodec(dict(keys.keys), keys.current_key_id),
            agent_credentials=tls.client_credentials(str(ca_file), str(trx_cert), str(trx_key)))
        stack.push_async_callback(transceiver.close)
        runner = await api.serve(transceiver, HopVerifier(keys), "127.0.0.1", 0)
        stack.push_async_callback(runner.cleanup)
        edge = EdgeNode(EdgeConfig(node_id=EDGE.node_id, region=EDGE.region, public="127.0.0.1:0",
                                   backbone="127.0.0.1:0", http="127.0.0.1:0"), registries[EDGE], keys)
        stack.push_async_callback(edge.close)
        await edge.start()
        while not registries[EDGE].nodes("transceiver"):  # the edge's watch brings the transceiver's record
            await asyncio.sleep(0.02)
        report = await call(f"{edge.url}/v1/sessions", bundled_speech(), bind="127.0.0.1", duration_s=3.0)
    assert report.ok, report.error
