"""The lab (voicemesh/app/lab/) without namespaces: its plan, WAN model, GeoIP database, report and
command line. The lab itself runs as root in tests/test_lab.py."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import maxminddb
import pytest

from voicemesh.app.cli import parser
from voicemesh.app.lab import report
from voicemesh.app.lab.plan import LAB_NETWORK, PREFIX, LabError, load_topology, plan
from voicemesh.app.lab.plan import Path as NetPath
from voicemesh.app.lab.runner import write_geoip
from voicemesh.app.lab.wan import Wan
from voicemesh.edge.config import EdgeConfig
from voicemesh.edge.geodns import EdgeTarget, choose_edge, mmdb_locator
from voicemesh.edge.whip import pick_transceivers
from voicemesh.registry import NodeRecord

pytestmark = pytest.mark.unit

TOPOLOGY = load_topology()


def city(lab, key: str):
    return next(c for c in lab.cities if c.key == key)


def ipv4_packet(source, destination, payload: bytes = b"x" * 8) -> bytes:
    """A minimal IPv4 header (only version, addresses and length matter to the WAN) and a payload."""
    header = bytes([0x45, 0, 0, 20 + len(payload)]) + bytes(8) + source.packed + destination.packed
    return header + payload


# -- the plan ---------------------------------------------------------------------------------------


def test_full_plan_has_a_namespace_per_region_edge_and_city_each_in_its_own_24() -> None:
    lab = plan(TOPOLOGY)
    roles = [node.role for node in lab.nodes]
    assert roles.count("ctl") == 1
    assert roles.count("core") == len(TOPOLOGY["core_regions"])
    assert roles.count("edge") == len(TOPOLOGY["edges"])
    assert roles.count("city") == len(TOPOLOGY["clients"])
    assert len({node.network for node in lab.nodes}) == len(lab.nodes)
    assert all(node.address in LAB_NETWORK and node.network.prefixlen == 24 for node in lab.nodes)
    assert all(node.namespace.startswith(PREFIX) and len(node.link) <= 15 for node in lab.nodes)
    assert lab.node("ctl").site == "fra" and lab.central.name == "eu-central" and lab.central_edge == "edge-fra"


def test_every_client_city_sits_near_its_nearest_edge() -> None:
    lab = plan(TOPOLOGY)
    for c in lab.cities:
        assert lab.edges[lab.nearest_edge(c)] == c.site, c.key


def test_the_smoke_lab_keeps_two_regions_their_edges_and_the_cities_near_them() -> None:
    lab = plan(TOPOLOGY, regions=2)
    assert [r.name for r in lab.regions] == ["eu-central", "us-east"]
    assert sorted(lab.edges) == ["edge-fra", "edge-iad"]
    assert [c.key for c in lab.cities] == ["berlin", "new-york"]
    assert plan(TOPOLOGY, regions=2, cities=["melbourne"]).cities[0].key == "melbourne"


def test_plan_errors_have_reasons() -> None:
    with pytest.raises(LabError) as bad_count:
        plan(TOPOLOGY, regions=0)
    with pytest.raises(LabError) as unknown:
        plan(TOPOLOGY, cities=["atlantis"])
    central_last = copy.deepcopy(TOPOLOGY)
    central_last["lab"]["central_region"] = "ap-southeast"
    with pytest.raises(LabError) as not_kept:
        plan(central_last, regions=2)
    no_rtt = copy.deepcopy(TOPOLOGY)
    del no_rtt["rtt_ms"]["fra-iad"]
    with pytest.raises(LabError) as missing:
        plan(no_rtt)
    no_model = {k: v for k, v in TOPOLOGY.items() if k != "public_internet"}
    with pytest.raises(LabError) as bad:
        plan(no_model)
    assert [e.value.reason for e in (bad_count, unknown, not_kept, missing, bad)] == [
        "bad_region_count", "unknown_city", "central_region_not_kept", "no_rtt", "bad_topology"]


def test_backbone_paths_are_clean_and_public_paths_grow_worse_with_length() -> None:
    lab = plan(TOPOLOGY)
    fra, syd = lab.node("edge-fra"), lab.node("edge-syd")
    assert lab.path(fra, syd) == lab.path(syd, fra) == NetPath(280.0)
    assert lab.path(fra, lab.node("core-eu-central")) == NetPath(1.0)
    melbourne = city(lab, "melbourne")
    near, far = lab.path(lab.city_node(melbourne), syd), lab.path(lab.city_node(melbourne), fra)
    assert near == NetPath(19.0, 2.0 + 2.0 * 0.19, 0.1 + 0.3 * 0.19)
    assert far.rtt_ms == pytest.approx(19 + 1.3 * 280)
    assert far.jitter_ms == pytest.approx(2.0 + 2.0 * far.rtt_ms / 100)
    assert far.loss_pct == pytest.approx(0.1 + 0.3 * far.rtt_ms / 100)
    assert lab.path(lab.city_node(melbourne), lab.city_node(city(lab, "berlin"))) is None


def test_modelled_round_trips_of_mesh_and_direct_calls() -> None:
    lab = plan(TOPOLOGY)
    new_york, berlin = city(lab, "new-york"), city(lab, "berlin")
    assert lab.mesh_rtt_ms(new_york) == 13 + 1  # public to edge-iad, backbone to us-east at the same site
    assert lab.direct_rtt_ms(new_york) == pytest.approx(13 + 1.3 * 90 + 1)
    assert lab.mesh_rtt_ms(berlin) == lab.direct_rtt_ms(berlin) == 14 + 1
    assert lab.distant(new_york) and not lab.distant(berlin)


def test_the_lab_predicts_the_region_the_edge_front_picks() -> None:
    lab = plan(TOPOLOGY)
    transceivers = [NodeRecord("transceiver", r.name, f"trx-{r.name}", http="http://trx", capacity=10,
                               lat=lab.region_node(r).lat, lon=lab.region_node(r).lon) for r in lab.regions]
    for edge in lab.edges:
        node = lab.node(edge)
        record = NodeRecord("edge", node.site, edge, lat=node.lat, lon=node.lon)
        rtts = EdgeConfig(region_rtt_ms=lab.region_rtts(edge)).region_rtts()
        assert [n.region for n in pick_transceivers(transceivers, record, region_rtt_ms=rtts)] == [
            r.name for r in lab.regions_for_edge(edge)], edge


def test_the_registry_url_names_each_regions_etcd_at_its_core_node() -> None:
    lab = plan(TOPOLOGY, regions=2)
    eu, us = (lab.region_node(r).address for r in lab.regions)
    assert lab.registry_url(2379) == f"etcd://eu-central={eu}:2379;us-east={us}:2379"
    assert [r.name for r in lab.regions_for_edge("edge-fra", without="eu-central")] == ["us-east"]


# -- the WAN ----------------------------------------------------------------------------------------


def test_wan_delivers_after_the_one_way_delay_and_drops_what_has_no_path() -> None:
    lab = plan(TOPOLOGY)
    wan = Wan(lab, random.Random(1))
    fra, syd = lab.node("edge-fra"), lab.node("edge-syd")
    assert wan.forward(ipv4_packet(fra.address, syd.address), now=100.0) == (syd, pytest.approx(100.140))
    berlin, dublin = lab.city_node(city(lab, "berlin")), lab.city_node(city(lab, "dublin"))
    outside = LAB_NETWORK.supernet(new_prefix=8)[1]
    assert wan.forward(ipv4_packet(berlin.address, dublin.address), 0.0) is None
    assert wan.forward(ipv4_packet(berlin.address, outside), 0.0) is None
    assert wan.forward(ipv4_packet(outside, berlin.address), 0.0) is None
    assert wan.forward(b"\x60" + bytes(39), 0.0) is None
    assert wan.drops == {"no_path": 1, "unknown_destination": 1, "unknown_source": 1, "not_ipv4": 1}
    assert wan.forwarded == 1


def test_wan_jitter_never_reorders_and_loss_follows_the_model() -> None:
    lab = plan(TOPOLOGY)
    wan = Wan(lab, random.Random(7))
    melbourne, fra = lab.city_node(city(lab, "melbourne")), lab.node("edge-fra")
    path = lab.path(melbourne, fra)
    times = [wan.forward(ipv4_packet(melbourne.address, fra.address), now=i * 0.020) for i in range(20_000)]
    delivered = [at for at in (t[1] for t in times if t is not None)]
    assert delivered == sorted(delivered)
    delays_ms = [(at - i * 0.020) * 1000 for i, at in ((i, t[1]) for i, t in enumerate(times) if t is not None)]
    assert min(delays_ms) >= path.one_way_ms - path.jitter_ms
    assert max(delays_ms) > path.one_way_ms + path.jitter_ms / 2
    assert wan.drops["loss"] / 20_000 == pytest.approx(path.loss_pct / 100, rel=0.2)


# -- GeoIP, report, command line ---------------------------------------------------------------


def test_geoip_database_steers_each_city_to_its_nearest_edge(tmp_path: Path) -> None:
    lab = plan(TOPOLOGY)
    write_geoip(lab, tmp_path / "cities.mmdb")
    edges = [EdgeTarget(e, lab.node(e).lat, lab.node(e).lon, lab.node(e).address) for e in sorted(lab.edges)]
    with maxminddb.open_database(str(tmp_path / "cities.mmdb")) as reader:
        locate = mmdb_locator(reader)
        for c in lab.cities:
            address = lab.city_node(c).address
            assert locate(address) == pytest.approx((c.lat, c.lon))
            assert choose_edge(locate(address), edges, lab.central_edge).node_id == lab.nearest_edge(c)
        assert locate(lab.node("edge-fra").address) is None


CALL = {"ok": True, "audio_rtt_ms": 120.0, "jitter_ms": 2.5, "packets_sent": 400, "packets_received": 398,
        "packets_lost": 2,
        "setup_ms": {"answer": 40.0, "ice_connected": 70.0, "dtls_connected": 110.0, "first_audio": 200.0},
        "error": None}


def test_report_rows_summary_and_table() -> None:
    lab = plan(TOPOLOGY, regions=2)
    berlin, new_york = city(lab, "berlin"), city(lab, "new-york")
    slow = {**CALL, "audio_rtt_ms": 240.0, "packets_received": 390, "packets_lost": 10}
    rows = [report.city_result(lab, berlin, "edge-fra", CALL, CALL),
            report.city_result(lab, new_york, "edge-iad", CALL, slow)]
    assert rows[1]["mesh"]["path"] == "edge-iad → us-east" and rows[1]["direct"]["path"] == "edge-fra → eu-central"
    assert rows[1]["mesh"]["loss_pct"] == 0.5 and rows[1]["direct"]["loss_pct"] == 2.5
    assert rows[1]["direct"]["model_rtt_ms"] == 131.0
    result = report.lab_result(lab, rows, {"forwarded": 1})
    assert result["ok"] and result["summary"] == {"cities": 2, "steered_to_nearest": 2, "calls_ok": 2, "distant": 1,
                                                  "mesh_lower_rtt": 1, "mesh_lower_loss": 1, "mesh_answer_in_goal": 1}
    table = report.format_table(result)
    assert "| New York (distant) | edge-iad | edge-iad | mesh | edge-iad → us-east | 14 | 120 | 2.5 | 0.5 |" in table
    assert "|  |  |  | direct | edge-fra → eu-central | 131 | 240 |" in table
    json.dumps(result)
    missteered = report.lab_result(lab, [report.city_result(lab, berlin, None, CALL, CALL)], {})
    assert not missteered["ok"] and report.loss_pct(0, 0) is None


def test_a_distant_mesh_answer_counts_in_the_goal_only_within_twice_the_model_rtt_and_50_ms() -> None:
    lab = plan(TOPOLOGY, regions=2)
    new_york = city(lab, "new-york")  # mesh model RTT 14 ms: goal 78 ms
    hops = ({"region": "us-east", "whip_ms": 30.0, "forward_ms": 20.0, "new_connection": False, "answer_ms": 15.0},
            {"region": "eu-central"})
    late = {**CALL, "setup_ms": {**CALL["setup_ms"], "answer": 79.0}, "dns_ms": 130.0}
    on_time = {**late, "setup_ms": {**CALL["setup_ms"], "answer": 78.0}}
    counts = [report.summary([report.city_result(lab, new_york, "edge-iad", call, CALL, hops)])["mesh_answer_in_goal"]
              for call in (late, on_time)]
    assert counts == [0, 1] and report.answer_goal_ms(14) == 78
    row = report.city_result(lab, new_york, "edge-iad", late, CALL, hops)["mesh"]
    assert row["dns_ms"] == 130.0 and row["answer_hops"]["forward_ms"] == 20.0 and "region" not in row["answer_hops"]


def test_a_region_failure_is_ok_only_if_each_moved_call_went_to_another_region() -> None:
    lab = plan(TOPOLOGY, regions=2)
    new_york = city(lab, "new-york")
    rows = [report.city_result(lab, new_york, "edge-iad", CALL, CALL, ({"region": "us-east"}, {"region": "eu-central"}))]
    assert rows[0]["mesh"]["region"] == "us-east"
    moved = report.failover_result(lab, new_york, "edge-iad", "us-east", CALL, "eu-central")
    assert (moved["expected_region"], moved["to_region"], moved["ok"]) == ("eu-central", "eu-central", True)
    assert moved["model_rtt_ms"] == 13 + 90
    result = report.lab_result(lab, rows, {}, [moved])
    assert result["ok"] and "| new-york | us-east | eu-central | eu-central | 120 (120) | 40 (40) |" in (
        report.format_table(result))
    stuck = report.failover_result(lab, new_york, "edge-iad", "us-east", {"ok": False, "error": "503"}, None)
    assert not report.lab_result(lab, rows, {}, [stuck])["ok"]
    assert "failover" not in report.lab_result(lab, rows, {})


def test_the_plot_draws_both_views_to_svg(tmp_path) -> None:
    from voicemesh.app.lab import plot

    lab = plan(TOPOLOGY, regions=2)
    new_york, berlin = city(lab, "new-york"), city(lab, "berlin")
    rows = [report.city_result(lab, berlin, "edge-fra", CALL, CALL, ({"region": "eu-central"}, {"region": "eu-central"})),
            report.city_result(lab, new_york, "edge-iad", CALL, CALL, ({"region": "us-east"}, {"region": "eu-central"}))]
    moved = report.failover_result(lab, new_york, "edge-iad", "us-east", CALL, "eu-central")
    plot.draw(lab, report.lab_result(lab, rows, {}, [moved]), str(tmp_path / "lab.svg"))
    svg = (tmp_path / "lab.svg").read_text()
    assert svg.startswith("<?xml") and "New York" in svg and "us-east" in svg


def test_lab_command_line() -> None:
    args = parser().parse_args(["lab", "run", "--regions", "2", "--cities", "berlin,new-york", "--json"])
    assert (args.command, args.lab_command, args.regions, args.cities, args.json) == (
        "lab", "run", 2, "berlin,new-york", True)
    assert parser().parse_args(["lab", "down"]).lab_command == "down"
    assert parser().parse_args(["lab", "run", "--fail-region", "us-east"]).fail_region == "us-east"


def test_a_lab_prefix_must_fit_link_names(monkeypatch) -> None:
    from voicemesh.app.lab import plan as plan_module

    monkeypatch.setattr(plan_module, "PREFIX", "vmr2-")
    lab = plan(TOPOLOGY)
    assert all(n.namespace.startswith("vmr2-") and n.link.startswith("vmr2") and len(n.link) <= 15 for n in lab.nodes)
    for bad in ("Vm-", "vm_", "a-very-long-prefix-", ""):
        monkeypatch.setattr(plan_module, "PREFIX", bad)
        with pytest.raises(LabError) as refused:
            plan(TOPOLOGY)
        assert refused.value.reason == "bad_prefix"
