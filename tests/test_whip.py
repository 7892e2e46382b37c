"""The WHIP front's choice of transceiver: nearest region with capacity, least loaded, or the pinned region."""

from __future__ import annotations

import pytest

from voicemesh.edge.whip import pick_transceivers
from voicemesh.registry import NodeRecord

pytestmark = pytest.mark.unit

EDGE_LON = NodeRecord(role="edge", region="eu-west", node_id="edge-lon", lat=51.51, lon=-0.13)


def trx(node_id: str, region: str, lat: float, lon: float, load: int = 0, capacity: int = 10,
        draining: bool = False) -> NodeRecord:
    return NodeRecord(role="transceiver", region=region, node_id=node_id, http="http://x", lat=lat, lon=lon,
                      load=load, capacity=capacity, draining=draining)


FRA_A = trx("fra-a", "eu-central", 50.11, 8.68, load=5)
FRA_B = trx("fra-b", "eu-central", 50.11, 8.68, load=2)
IAD_A = trx("iad-a", "us-east", 39.04, -77.49)


def test_nearest_region_first_then_least_loaded() -> None:
    assert pick_transceivers([IAD_A, FRA_A, FRA_B], EDGE_LON) == [FRA_B, FRA_A, IAD_A]


def test_full_or_draining_transceivers_are_skipped() -> None:
    full = trx("fra-full", "eu-central", 50.11, 8.68, load=10)
    draining = trx("fra-drain", "eu-central", 50.11, 8.68, draining=True)
    assert pick_transceivers([full, draining, IAD_A], EDGE_LON) == [IAD_A]


def test_a_pinned_region_overrides_distance() -> None:
    assert pick_transceivers([IAD_A, FRA_A, FRA_B], EDGE_LON, region="us-east") == [IAD_A]
    assert pick_transceivers([FRA_A], EDGE_LON, region="ap-southeast") == []
