"""Per-region users across two clusters, with TLS and auth (registry/access.py, registry/regions.py): one
certificate per node, accepted by both regions' etcds (one CA); the node registers and claims in its home
region's cluster and reads the other's; a write in a cluster the node is not homed in is refused by etcd."""

from __future__ import annotations

import pytest
from polling import eventually

from voicemesh.registry import NodeRecord, RegistryForbidden, open_registry
from voicemesh.registry.access import Identity
from voicemesh.registry.etcd_auth import ensure_access

pytestmark = pytest.mark.integration

EU_TRX = Identity("transceiver", "eu-central", "trx-eu")
US_TRX = Identity("transceiver", "us-east", "trx-us")
LON_EDGE = Identity("edge", "lon", "edge-lon", home="eu-central")
NODES = [EU_TRX, US_TRX, LON_EDGE, Identity("dns")]
"""Every node has its user in both clusters (``registry init --cluster-region`` on each)."""


def record(identity: Identity, **fields) -> NodeRecord:
    return NodeRecord(identity.role, identity.region, identity.node_id, **fields)


@pytest.fixture
async def clusters(secure_etcd_pair):
    """eu-central's and us-east's etcds, each set up for NODES as the cluster of its region."""
    eu, us = secure_etcd_pair
    for server, region in ((eu, "eu-central"), (us, "us-east")):
        await ensure_access([server.endpoint], server.tls("root"), NODES, cluster=region)
    return {"eu-central": eu, "us-east": us}


async def test_a_node_registers_at_home_and_reads_the_other_region(clusters) -> None:
    eu, us = clusters["eu-central"], clusters["us-east"]
    url = f"etcd://eu-central={eu.endpoint};us-east={us.endpoint}"
    started = []
    for identity, home in ((EU_TRX, "eu-central"), (US_TRX, "us-east"), (LON_EDGE, "eu-central")):
        registry = open_registry(url, region=home, lease_ttl_s=2, tls=eu.tls(identity.user))
        await registry.start()
        index = await registry.allocate_index(identity.role, identity.region)
        await registry.register(record(identity, index=index, http=f"http://{identity.node_id}"))
        started.append(registry)
    eu_trx, us_trx, lon = started
    claim = await us_trx.claim_session("s-us", record(US_TRX, index=1))
    assert claim.key == "/voicemesh/v1/sessions/us-east/s-us"
    for registry in started:
        await eventually(lambda r=registry: sorted(n.node_id for n in r.nodes()) == ["edge-lon", "trx-eu", "trx-us"],
                         "every region's nodes in every node's view")
    assert await lon.session_owner("s-us") == "trx-us"  # an edge homed in eu-central reads us-east's claims
    assert await us_trx.release(claim)
    for registry in started:
        await registry.close()


@pytest.mark.parametrize(("writer", "cluster", "write"), [
    (US_TRX, "eu-central", lambda r: r.register(record(US_TRX))),
    (US_TRX, "eu-central", lambda r: r.claim_session("s1", record(US_TRX))),
    (US_TRX, "eu-central", lambda r: r.allocate_index("transceiver", "us-east")),
    (EU_TRX, "us-east", lambda r: r.register(record(EU_TRX))),
    (LON_EDGE, "us-east", lambda r: r.register(record(LON_EDGE))),
    (LON_EDGE, "us-east", lambda r: r.allocate_index("edge", "lon")),
], ids=lambda v: v.user if isinstance(v, Identity) else v if isinstance(v, str) else "")
async def test_a_write_in_a_cluster_the_node_is_not_homed_in_is_refused(clusters, writer, cluster, write) -> None:
    """With the node's own certificate, straight to the other region's etcd (not through RegionalRegistry,
    which would not send it): it reads there, but etcd refuses the write."""
    server = clusters[cluster]
    registry = open_registry(server.url, lease_ttl_s=2, tls=server.tls(writer.user))
    await registry.start()
    try:
        with pytest.raises(RegistryForbidden, match="permission denied"):
            await write(registry)
    finally:
        await registry.close()
