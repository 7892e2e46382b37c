"""Who may write what in the registry (registry/access.py): each node's user and the key ranges its role grants."""

from __future__ import annotations

import json

import pytest

from voicemesh.registry import InvalidName, NodeRecord, session_key
from voicemesh.registry.access import READER_GRANTS, Grant, Identity, Permission, identities_from_topology, prefix_end

pytestmark = pytest.mark.unit

RW, R = Permission.READWRITE, Permission.READ


def covers(grants: list[Grant], key: str, permission: Permission) -> bool:
    """Whether some grant gives ``permission`` (READWRITE gives both) on ``key``, as etcd checks a range."""
    for grant in grants:
        inside = key == grant.key if not grant.range_end else grant.key <= key < grant.range_end
        if inside and grant.permission in (permission, RW):
            return True
    return False


def test_user_names_are_role_region_node() -> None:
    assert Identity("edge", "fra", "edge-fra").user == "edge/fra/edge-fra"
    assert Identity.parse("transceiver/eu-central/trx-1") == Identity("transceiver", "eu-central", "trx-1")
    assert Identity.parse("dns").user == "dns"


@pytest.mark.parametrize("spec", ["edge/fra", "edge/fra/a/b", "root", "relay/fra/x", "edge//x"])
def test_bad_identities_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        Identity.parse(spec)


def test_an_edge_writes_its_own_record_and_its_region_index_only() -> None:
    grants = Identity("edge", "fra", "e1").grants()
    assert grants == sorted([
        Grant("/voicemesh/v1/index/edge/fra/", "/voicemesh/v1/index/edge/fra0", RW),
        Grant("/voicemesh/v1/nodes/edge/fra/e1", "", RW),
        Grant("/voicemesh/v1/sessions/", "/voicemesh/v1/sessions0", R),
    ], key=lambda g: g.key)
    assert covers(grants, NodeRecord("edge", "fra", "e1").key, RW)
    for key in (NodeRecord("edge", "fra", "e2").key, NodeRecord("edge", "fra", "e1x").key,
                NodeRecord("transceiver", "fra", "e1").key, NodeRecord("agent", "fra", "e1").key,
                session_key("fra", "s1"), "/voicemesh/v1/index/edge/fra-2/1", "/voicemesh/v1/index/transceiver/fra/1"):
        assert not covers(grants, key, Permission.WRITE), key


def test_a_transceiver_claims_sessions_of_its_region_only() -> None:
    grants = Identity("transceiver", "eu", "trx-1").grants()
    assert covers(grants, session_key("eu", "s1"), RW)
    assert covers(grants, "/voicemesh/v1/index/transceiver/eu/7", RW)
    assert not covers(grants, session_key("eu-west", "s1"), Permission.WRITE)
    assert not covers(grants, NodeRecord("transceiver", "eu", "trx-2").key, Permission.WRITE)


def test_agents_write_their_record_and_dns_nothing() -> None:
    assert Identity("agent", "eu", "a1").grants() == [Grant("/voicemesh/v1/nodes/agent/eu/a1", "", RW)]
    assert Identity("dns").grants() == []
    assert READER_GRANTS == [Grant("/voicemesh/v1/nodes/", "/voicemesh/v1/nodes0", R)]
    assert prefix_end("/a/") == "/a0"


def test_session_keys_carry_the_region() -> None:
    assert session_key("eu", "abc") == "/voicemesh/v1/sessions/eu/abc"
    with pytest.raises(InvalidName):
        session_key("eu", "a/b")


def test_identities_from_the_topology_file(tmp_path) -> None:
    path = tmp_path / "topology.json"
    path.write_text(json.dumps({"edges": [{"id": "edge-fra", "site": "fra"}],
                                "core_regions": [{"name": "eu-central", "region_id": 1, "site": "fra"}]}))
    assert [i.user for i in identities_from_topology(str(path))] == [
        "edge/fra/edge-fra", "transceiver/eu-central/trx-eu-central", "dns"]
    path.write_text(json.dumps({"edges": [{"id": "edge-fra"}]}))
    with pytest.raises(ValueError, match="need id and site"):
        identities_from_topology(str(path))


def test_with_a_cluster_per_region_a_node_writes_only_in_its_home_regions() -> None:
    trx, edge = Identity("transceiver", "us-east", "trx-1"), Identity.parse("edge/lon/edge-lon@eu-central")
    assert edge == Identity("edge", "lon", "edge-lon", "eu-central") and edge.user == "edge/lon/edge-lon"
    assert trx.grants("us-east") == trx.grants() and edge.grants("eu-central") == edge.grants()
    for identity, foreign in ((trx, "eu-central"), (edge, "us-east")):
        reads = identity.grants(foreign)
        assert [(g.key, g.range_end) for g in reads] == [(g.key, g.range_end) for g in identity.grants()]
        assert all(g.permission == R for g in reads), identity
    with pytest.raises(ValueError, match="needs its home region"):
        Identity("edge", "lon", "edge-lon").grants("eu-central")
    with pytest.raises(ValueError, match="only an edge"):
        Identity.parse("transceiver/us-east/trx-1@eu-central")


def test_an_edge_from_the_topology_is_homed_in_the_core_region_nearest_its_site() -> None:
    from voicemesh.app.lab.plan import DEFAULT_TOPOLOGY, load_topology, plan

    lab = plan(load_topology())
    homes = {i.node_id: i.home for i in identities_from_topology(str(DEFAULT_TOPOLOGY)) if i.role == "edge"}
    assert homes == {edge: lab.region_for_edge(edge).name for edge in lab.edges}
    assert homes["edge-lon"] == "eu-central" and homes["edge-syd"] == "ap-southeast"
