"""The WHIP front's choice of transceiver: nearest region with capacity, least loaded, or the pinned region."""

from __future__ import annotations

import pytest

from voicemesh.edge.config import EdgeConfig
from voicemesh.edge.whip import RecentForwards, forward_order, pick_transceivers
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


def test_offers_sent_but_not_yet_in_the_record_count_as_load() -> None:
    # fra-b's record says 2 sessions against fra-a's 5; this edge just sent fra-b 4 offers its record does not
    # count yet: a burst spreads instead of all going to the transceiver least loaded when it began.
    assert pick_transceivers([FRA_A, FRA_B], EDGE_LON, recent={"fra-b": 4}) == [FRA_A, FRA_B]
    assert pick_transceivers([FRA_A, FRA_B], EDGE_LON, recent={"fra-b": 2}) == [FRA_B, FRA_A]


def test_recent_forwards_are_counted_for_their_window_only() -> None:
    recent = RecentForwards(window_s=1.0)
    recent.add("fra-a", 10.0)
    recent.add("fra-a", 10.5)
    recent.add("fra-b", 10.2)
    assert recent.counts(10.6) == {"fra-a": 2, "fra-b": 1}
    assert recent.counts(11.3) == {"fra-a": 1}
    assert recent.counts(12.0) == {}


def test_full_or_draining_transceivers_are_skipped() -> None:
    full = trx("fra-full", "eu-central", 50.11, 8.68, load=10)
    draining = trx("fra-drain", "eu-central", 50.11, 8.68, draining=True)
    assert pick_transceivers([full, draining, IAD_A], EDGE_LON) == [IAD_A]


def test_a_pinned_region_overrides_distance() -> None:
    assert pick_transceivers([IAD_A, FRA_A, FRA_B], EDGE_LON, region="us-east") == [IAD_A]
    assert pick_transceivers([FRA_A], EDGE_LON, region="ap-southeast") == []


def test_backbone_rtt_from_the_topology_orders_regions_before_distance() -> None:
    assert pick_transceivers([IAD_A, FRA_A, FRA_B], EDGE_LON, region_rtt_ms={"us-east": 75, "eu-central": 90}) == [
        IAD_A, FRA_B, FRA_A]
    assert EdgeConfig(region_rtt_ms="eu-central=15, us-east=75").region_rtts() == {"eu-central": 15, "us-east": 75}
    with pytest.raises(ValueError):
        EdgeConfig(region_rtt_ms="eu-central").region_rtts()


def test_a_region_that_does_not_answer_leaves_attempts_for_the_next_region() -> None:
    """Without the per-region cap, three transceivers of a dead region would use every attempt."""
    fra_c = trx("fra-c", "eu-central", 50.11, 8.68, load=7)
    order = forward_order(pick_transceivers([IAD_A, FRA_A, FRA_B, fra_c], EDGE_LON))
    assert order == [FRA_B, FRA_A, IAD_A]
