"""Geo DNS answers (edge/geodns.py): nearest healthy edge, fallback, ECS scope, IPv6, mapped addresses,
the zone's records and errors, response size, and the rendered-answer cache. Bytes in, bytes out."""

from __future__ import annotations

import ipaddress
import json
import random
import tracemalloc
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import maxminddb
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from voicemesh.edge.geodns import (
    AnswerCache,
    BadZone,
    EdgeTarget,
    GeoDNS,
    MalformedQuery,
    Zone,
    choose_edge,
    client_network,
    edge_targets,
    mmdb_locator,
    parse_nameservers,
    parse_query,
    question_key,
)
from voicemesh.registry import NodeRecord

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
SITES = json.loads((REPO / "infra" / "topology.json").read_text())["sites"]
MAXMIND_TEST_DB = REPO / "tests" / "data" / "GeoIP2-City-Test.mmdb"

# Client networks of the synthetic City database (documentation prefixes).
LONDON, NEW_YORK, SINGAPORE = "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"
LONDON6, SINGAPORE6 = "2001:db8:1::/48", "2001:db8:3::/48"
NO_LOCATION = "100.64.0.0/24"  # in the database with a country but no coordinates


def edge(site: str, relay: str, **fields) -> NodeRecord:
    """The edge PoP at ``site`` of infra/topology.json, its public relay at ``relay``."""
    return NodeRecord("edge", site, f"edge-{site}", public_relay=relay,
                      lat=SITES[site]["lat"], lon=SITES[site]["lon"], **fields)


EDGES = [edge("lon", "10.9.0.1:3478"), edge("iad", "10.9.0.2:3478"), edge("sin", "10.9.0.3:3478"),
         edge("fra", "10.9.0.4:3478"), edge("nrt", "[fd00::5]:3478"), edge("sjc", "[fd00::6]:3478")]


@pytest.fixture(scope="module")
def city_db(tmp_path_factory) -> Path:
    """A GeoIP2-City database written with mmdb-writer, laid out like MaxMind's (IPv4 inside IPv6)."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City", languages=["en"],
                        description={"en": "voicemesh test City database"})
    for networks, lat, lon in [([LONDON, LONDON6], 51.5085, -0.1257), ([NEW_YORK], 40.7143, -74.006),
                               ([SINGAPORE, SINGAPORE6], 1.2897, 103.8501)]:
        writer.insert_network(IPSet(networks), {"location": {"latitude": lat, "longitude": lon, "accuracy_radius": 50}})
    writer.insert_network(IPSet([NO_LOCATION]), {"country": {"iso_code": "US"}})
    path = tmp_path_factory.mktemp("geoip") / "city.mmdb"
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def geodns(city_db):
    """A GeoDNS for rtc.voicemesh.test over the synthetic database, with EDGES healthy."""
    with maxminddb.open_database(str(city_db)) as reader:
        zone = Zone("voicemesh.test", "rtc.voicemesh.test",
                    nameservers=parse_nameservers("ns1.voicemesh.test=10.9.9.53,ns1.voicemesh.test=fd00::53,"
                                                  "ns.example.net"))
        server = GeoDNS(zone, mmdb_locator(reader), default_edge="edge-fra")
        server.set_edges(EDGES)
        yield server


def ask(server: GeoDNS, name: str, rdtype: str = "A", *, source: str = "10.200.0.1", ecs: str | None = None,
        edns: int = 0, payload: int = 1232, flags: int = dns.flags.RD, qid: int = 4660, want_dnssec: bool = False,
        options: list[dns.edns.Option] = ()) -> dns.message.Message:
    """Send one query through ``server.respond`` and parse the response."""
    options = [*options, dns.edns.ECSOption.from_text(ecs)] if ecs else list(options)
    query = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload, options=options, flags=flags,
                                   want_dnssec=want_dnssec)
    query.id = qid
    wire = server.respond(query.to_wire(), source)
    assert wire is not None
    return dns.message.from_wire(wire)


def addresses(response: dns.message.Message) -> list[str]:
    return [rdata.address for rrset in response.answer for rdata in rrset]


def ecs_of(response: dns.message.Message) -> dns.edns.ECSOption | None:
    return next((option for option in response.options if isinstance(option, dns.edns.ECSOption)), None)


# --- choosing the edge: a pure function of (location, healthy edges, default) ---

TARGETS = edge_targets(EDGES)


@pytest.mark.parametrize("location, expected", [
    ((51.5085, -0.1257), "edge-lon"),       # London
    ((48.8566, 2.3522), "edge-lon"),        # Paris: London 344 km, Frankfurt 479 km
    ((52.52, 13.405), "edge-fra"),          # Berlin
    ((40.7143, -74.006), "edge-iad"),       # New York
    ((-33.87, 151.21), "edge-sin"),         # Sydney, with no Sydney edge up: Singapore is nearest
    ((37.77, -122.42), "edge-sjc"),         # San Francisco
])
def test_the_nearest_edge_by_great_circle_distance(location, expected):
    assert choose_edge(location, TARGETS, "edge-fra").node_id == expected


def test_no_location_takes_the_default_edge_else_the_first_healthy():
    assert choose_edge(None, TARGETS, "edge-sin").node_id == "edge-sin"
    assert choose_edge(None, TARGETS, "edge-gone").node_id == "edge-fra"
    assert choose_edge(None, TARGETS, "").node_id == "edge-fra"
    assert choose_edge((1.0, 2.0), (), "edge-fra") is None


def test_only_healthy_addressable_edges_are_answered():
    nodes = [edge("lon", "10.9.0.1:3478"), edge("fra", "10.9.0.4:3478", draining=True),
             edge("iad", "relay.example:3478"), edge("sin", ""),
             NodeRecord("transceiver", "eu", "trx-1", public_relay="10.9.0.9:3478"),
             edge("nrt", "[::ffff:10.9.0.5]:3478")]
    assert edge_targets(nodes) == (
        EdgeTarget("edge-lon", 51.51, -0.13, ipaddress.ip_address("10.9.0.1")),
        EdgeTarget("edge-nrt", 35.68, 139.69, ipaddress.ip_address("10.9.0.5")),
    )


@pytest.mark.parametrize("address, prefix_len, network", [
    ("203.0.113.77", 32, "203.0.113.0/24"),
    ("203.0.113.77", 20, "203.0.112.0/20"),
    ("::ffff:203.0.113.77", 32, "203.0.113.0/24"),
    ("2001:db8:3:4567:89ab::1", 128, "2001:db8:3:4500::/56"),
    ("2001:db8:3::", 48, "2001:db8:3::/48"),
])
def test_the_client_network_is_cut_to_the_scope_prefix(address, prefix_len, network):
    assert client_network(ipaddress.ip_address(address), prefix_len) == ipaddress.ip_network(network)


def test_maxmind_official_test_database_locates_ipv4_ipv6_and_mapped_addresses():
    with maxminddb.open_database(str(MAXMIND_TEST_DB)) as reader:
        locate = mmdb_locator(reader)
        assert locate(ipaddress.ip_address("175.16.199.0")) == (43.88, 125.3228)             # Changchun
        assert locate(ipaddress.ip_address("2001:480:10::")) == (32.7203, -117.1552)         # San Diego
        assert locate(ipaddress.ip_address("::ffff:175.16.199.0")) == (43.88, 125.3228)
        assert locate(ipaddress.ip_address("10.1.2.3")) is None


# --- A and AAAA of the mesh name ---

def test_ecs_subnet_steers_to_the_nearest_edge_with_a_24_scope(geodns):
    response = ask(geodns, "rtc.voicemesh.test", ecs=SINGAPORE, source="10.200.0.1")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA and not response.flags & dns.flags.RA
    assert addresses(response) == ["10.9.0.3"]
    assert response.answer[0].ttl == 30
    ecs = ecs_of(response)
    assert (ecs.address, ecs.srclen, ecs.scopelen) == ("203.0.113.0", 24, 24)


def test_without_ecs_the_resolver_address_steers_and_no_ecs_is_returned(geodns):
    response = ask(geodns, "rtc.voicemesh.test", source="198.51.100.53")
    assert addresses(response) == ["10.9.0.2"]
    assert ecs_of(response) is None


def test_ipv4_mapped_resolver_and_ecs_addresses_count_as_ipv4(geodns):
    assert addresses(ask(geodns, "rtc.voicemesh.test", source="::ffff:203.0.113.9")) == ["10.9.0.3"]
    response = ask(geodns, "rtc.voicemesh.test", ecs="::ffff:192.0.2.0/120")
    assert addresses(response) == ["10.9.0.1"]
    assert ecs_of(response).scopelen == 120


def test_ipv6_clients_get_a_56_scope_and_aaaa_picks_among_ipv6_edges(geodns):
    a = ask(geodns, "rtc.voicemesh.test", "A", ecs="2001:db8:3:aa00::/56")
    assert addresses(a) == ["10.9.0.3"]
    assert ecs_of(a).scopelen == 56
    aaaa = ask(geodns, "rtc.voicemesh.test", "AAAA", ecs="2001:db8:3:aa00::/56")
    assert addresses(aaaa) == ["fd00::5"]  # Tokyo: the nearest edge with an IPv6 relay address
    assert addresses(ask(geodns, "rtc.voicemesh.test", "AAAA", source="2001:db8:1::99")) == ["fd00::6"]


def test_an_ecs_prefix_shorter_than_the_scope_is_looked_up_as_given(geodns):
    response = ask(geodns, "rtc.voicemesh.test", ecs="203.0.0.0/16")
    assert addresses(response) == ["10.9.0.4"]  # 203.0.0.0 has no location: the default edge
    assert ecs_of(response).scopelen == 24


@pytest.mark.parametrize("client", [{"source": "10.200.0.1"}, {"ecs": NO_LOCATION}, {"ecs": "172.16.0.0/24"}])
def test_an_address_without_location_gets_the_default_edge(geodns, client):
    assert addresses(ask(geodns, "rtc.voicemesh.test", **client)) == ["10.9.0.4"]


def test_an_ecs_source_prefix_of_zero_uses_the_resolver_and_returns_scope_zero(geodns):
    response = ask(geodns, "rtc.voicemesh.test", ecs="0.0.0.0/0", source="203.0.113.53")
    assert addresses(response) == ["10.9.0.3"]
    ecs = ecs_of(response)
    assert (ecs.srclen, ecs.scopelen) == (0, 0)


def test_draining_and_expired_edges_leave_the_answers(geodns):
    assert addresses(ask(geodns, "rtc.voicemesh.test", ecs=LONDON)) == ["10.9.0.1"]
    generation = geodns.generation
    draining = [edge("lon", "10.9.0.1:3478", draining=True), *EDGES[1:]]
    assert geodns.set_edges(draining)
    assert addresses(ask(geodns, "rtc.voicemesh.test", ecs=LONDON)) == ["10.9.0.4"]
    assert geodns.set_edges(EDGES[2:])  # London's and Iad's leases expired: they left the view
    assert addresses(ask(geodns, "rtc.voicemesh.test", ecs=NEW_YORK)) == ["10.9.0.4"]
    assert geodns.generation == generation + 2


def test_no_healthy_edge_is_servfail_and_no_edge_of_the_family_is_nodata(geodns):
    geodns.set_edges(EDGES[:4])  # IPv4 only
    aaaa = ask(geodns, "rtc.voicemesh.test", "AAAA", ecs=SINGAPORE)
    assert aaaa.rcode() == dns.rcode.NOERROR and aaaa.answer == []
    assert aaaa.authority[0].rdtype == dns.rdatatype.SOA
    geodns.set_edges([])
    assert ask(geodns, "rtc.voicemesh.test", ecs=SINGAPORE).rcode() == dns.rcode.SERVFAIL


# --- the rest of the zone ---

def test_soa_and_ns_at_the_apex_and_the_name_servers_addresses(geodns):
    soa = ask(geodns, "voicemesh.test", "SOA")
    assert soa.answer[0].to_text() == ("voicemesh.test. 30 IN SOA ns1.voicemesh.test. hostmaster.voicemesh.test. "
                                       "1 3600 600 86400 30")
    ns = ask(geodns, "voicemesh.test", "NS")
    assert sorted(rdata.target.to_text() for rdata in ns.answer[0]) == ["ns.example.net.", "ns1.voicemesh.test."]
    assert ns.flags & dns.flags.AA
    assert addresses(ask(geodns, "ns1.voicemesh.test", "A")) == ["10.9.9.53"]
    assert addresses(ask(geodns, "ns1.voicemesh.test", "AAAA")) == ["fd00::53"]


def test_unknown_names_in_the_zone_are_nxdomain_with_the_soa(geodns):
    for name in ["www.voicemesh.test", "a.rtc.voicemesh.test"]:
        response = ask(geodns, name)
        assert response.rcode() == dns.rcode.NXDOMAIN
        assert response.flags & dns.flags.AA
        assert response.authority[0].to_text().startswith("voicemesh.test. 30 IN SOA")


def test_other_types_at_existing_names_are_nodata(geodns):
    response = ask(geodns, "rtc.voicemesh.test", "TXT", ecs=LONDON)
    assert (response.rcode(), response.answer) == (dns.rcode.NOERROR, [])
    assert response.authority[0].rdtype == dns.rdatatype.SOA
    assert ecs_of(response).scopelen == 0  # the same for every client


def test_empty_non_terminals_exist():
    zone = Zone("voicemesh.test", "rtc.eu.voicemesh.test")
    response = ask(GeoDNS(zone, lambda address: None), "eu.voicemesh.test")
    assert (response.rcode(), response.answer) == (dns.rcode.NOERROR, [])


def test_names_outside_the_zone_and_other_classes_are_refused_without_recursion(geodns):
    outside = ask(geodns, "example.com", ecs=LONDON)
    assert outside.rcode() == dns.rcode.REFUSED
    assert not outside.flags & (dns.flags.AA | dns.flags.RA)
    assert outside.answer == outside.authority == []
    assert ecs_of(outside).scopelen == 0
    chaos = dns.message.make_query("version.bind", "TXT", rdclass=dns.rdataclass.CH)
    assert dns.message.from_wire(geodns.respond(chaos.to_wire(), "10.200.0.1")).rcode() == dns.rcode.REFUSED


def test_any_gets_one_synthesised_hinfo(geodns):
    response = ask(geodns, "rtc.voicemesh.test", "ANY")
    assert [rrset.to_text() for rrset in response.answer] == ['rtc.voicemesh.test. 30 IN HINFO "RFC8482" ""']


def test_rd_is_echoed_and_do_copied(geodns):
    response = ask(geodns, "rtc.voicemesh.test", flags=0)
    assert not response.flags & dns.flags.RD
    query = dns.message.make_query("rtc.voicemesh.test", "A", want_dnssec=True)
    assert dns.message.from_wire(geodns.respond(query.to_wire(), "10.200.0.1")).ednsflags & dns.flags.DO


# --- bad input ---

def test_short_datagrams_and_responses_are_dropped(geodns):
    assert geodns.respond(b"\x12\x34\x01", "10.200.0.1") is None
    response = dns.message.make_response(dns.message.make_query("rtc.voicemesh.test", "A"))
    assert geodns.respond(response.to_wire(), "10.200.0.1") is None
    assert geodns.drops == {"short_header": 1, "response": 1}


@pytest.mark.parametrize("wire", [
    bytes.fromhex("abcd 0100 0001 0000 0000 0000 03727463 ff"),           # question name runs off the end
    bytes.fromhex("abcd 0100 0002 0000 0000 0000") + b"\x00\x00\x01\x00\x01" * 2,  # two questions
    bytes.fromhex("abcd 0100 0000 0000 0000 0000"),                       # no question
])
def test_malformed_queries_get_a_formerr_header(geodns, wire):
    response = dns.message.from_wire(geodns.respond(wire, "10.200.0.1"))
    assert (response.id, response.rcode(), response.question) == (0xABCD, dns.rcode.FORMERR, [])
    assert response.flags & dns.flags.RD
    assert sum(geodns.formerr.values()) == 1


@pytest.mark.parametrize("option", [
    bytes.fromhex("0003 18 00 cb0071"),        # unknown FAMILY
    bytes.fromhex("0001 21 00 cb007100 00"),   # source prefix over 32 bits
    bytes.fromhex("0001 17 00 cb0071"),        # /23 with the 24th bit set
    bytes.fromhex("0001 18 00 cb007100"),      # more ADDRESS octets than /24 needs
])
def test_a_malformed_ecs_option_is_formerr(geodns, option):
    query = dns.message.make_query("rtc.voicemesh.test", "A", use_edns=0,
                                   options=[dns.edns.GenericOption(dns.edns.OptionType.ECS, option)])
    response = dns.message.from_wire(geodns.respond(query.to_wire(), "10.200.0.1"))
    assert response.rcode() == dns.rcode.FORMERR
    assert geodns.formerr == {"malformed": 1}


def test_edns_versions_above_zero_get_badvers_and_other_opcodes_notimp(geodns):
    assert ask(geodns, "rtc.voicemesh.test", edns=1).rcode() == dns.rcode.BADVERS
    notify = dns.message.make_query("voicemesh.test", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    response = dns.message.from_wire(geodns.respond(notify.to_wire(), "10.200.0.1"))
    assert response.rcode() == dns.rcode.NOTIMP


def test_mangled_queries_never_raise(geodns):
    valid = dns.message.make_query("rtc.voicemesh.test", "A", use_edns=0,
                                   options=[dns.edns.ECSOption.from_text(SINGAPORE)]).to_wire()
    rng = random.Random(7)
    for _ in range(2000):
        wire = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            wire[rng.randrange(len(wire))] = rng.randrange(256)
        wire = bytes(wire[:rng.randint(0, len(wire))]) if rng.random() < 0.3 else bytes(wire)
        response = geodns.respond(wire, "10.200.0.1")
        assert response is None or dns.message.from_wire(response).flags & dns.flags.QR


def test_parse_query_names_the_reason():
    with pytest.raises(MalformedQuery) as excinfo:
        parse_query(b"\x00" * 5)
    assert excinfo.value.reason == "short_header"


# --- size: never more than the question invites ---

def test_a_response_never_exceeds_the_payload_the_query_allows():
    many = ",".join(f"name-server-number-{n}.example.net" for n in range(60))
    server = GeoDNS(Zone("voicemesh.test", "rtc.voicemesh.test", nameservers=parse_nameservers(many)),
                    lambda address: None)
    plain = dns.message.make_query("voicemesh.test", "NS")
    wire = server.respond(plain.to_wire(), "10.200.0.1")
    assert len(wire) <= 512 and dns.message.from_wire(wire).flags & dns.flags.TC
    edns = dns.message.make_query("voicemesh.test", "NS", use_edns=0, payload=4096)
    wire = server.respond(edns.to_wire(), "10.200.0.1")
    assert len(wire) <= 1232 and dns.message.from_wire(wire).flags & dns.flags.TC
    small = dns.message.make_query("voicemesh.test", "NS", use_edns=0, payload=100)
    assert len(server.respond(small.to_wire(), "10.200.0.1")) <= 512


# --- the cache of rendered answers ---

def test_a_repeated_query_is_answered_from_the_cache_with_its_own_id(geodns):
    first = ask(geodns, "rtc.voicemesh.test", ecs=SINGAPORE, qid=1)
    second = ask(geodns, "rtc.voicemesh.test", ecs=SINGAPORE, qid=2)
    assert (geodns.cache_misses, geodns.cache_hits) == (1, 1)
    assert second.id == 2
    second.id = first.id
    assert second == first


def test_the_cache_echoes_the_question_as_asked(geodns):
    ask(geodns, "rtc.voicemesh.test", ecs=SINGAPORE)
    response = ask(geodns, "RtC.VoiceMesh.TEST", ecs=SINGAPORE)
    assert response.question[0].name.to_text() == "RtC.VoiceMesh.TEST."
    assert response.answer[0].name.to_text() == "RtC.VoiceMesh.TEST."


def test_without_ecs_the_cache_is_keyed_by_the_resolver_network(geodns):
    assert addresses(ask(geodns, "rtc.voicemesh.test", source="192.0.2.10")) == ["10.9.0.1"]
    assert addresses(ask(geodns, "rtc.voicemesh.test", source="192.0.2.200")) == ["10.9.0.1"]
    assert addresses(ask(geodns, "rtc.voicemesh.test", source="203.0.113.10")) == ["10.9.0.3"]
    assert (geodns.cache_misses, geodns.cache_hits) == (2, 1)


def test_answers_that_do_not_depend_on_the_client_are_shared_by_all_resolvers(geodns):
    ask(geodns, "voicemesh.test", "SOA", source="192.0.2.10")
    ask(geodns, "voicemesh.test", "SOA", source="203.0.113.10")
    assert (geodns.cache_misses, geodns.cache_hits) == (1, 1)


def test_a_health_change_invalidates_the_cache_and_other_changes_do_not(geodns):
    ask(geodns, "rtc.voicemesh.test", ecs=LONDON)
    assert not geodns.set_edges([edge("lon", "10.9.0.1:3478", load=7, capacity=50), *EDGES[1:]])
    ask(geodns, "rtc.voicemesh.test", ecs=LONDON)
    assert geodns.cache_hits == 1
    assert geodns.set_edges(EDGES[1:])
    assert addresses(ask(geodns, "rtc.voicemesh.test", ecs=LONDON)) == ["10.9.0.4"]
    assert geodns.cache_hits == 1


def test_errors_are_not_cached(geodns):
    for _ in range(2):
        ask(geodns, "nothing.voicemesh.test")
        ask(geodns, "example.com")
    assert geodns.cache_hits == 0


def test_case_variants_and_cookies_share_one_entry(geodns):
    cookie = dns.edns.CookieOption(b"12345678", b"")
    for name in ["rtc.voicemesh.test", "RTC.voicemesh.test", "rTc.VOICEMESH.test"]:
        response = ask(geodns, name, ecs=SINGAPORE, options=[cookie])
        assert response.question[0].name.to_text() == f"{name}."
        ask(geodns, name, ecs=SINGAPORE, payload=4096)  # any payload over 1232 is one payload class
    assert (geodns.cache_misses, geodns.cache_hits, len(geodns.cache)) == (1, 5, 1)


@pytest.mark.parametrize("variant", [
    {"want_dnssec": True}, {"payload": 600}, {"edns": -1}, {"flags": 0}, {"rdtype": "AAAA"},
    {"ecs": "203.0.113.0/25"}, {"options": [dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"")]},
])
def test_what_changes_the_answer_is_in_the_key(geodns, variant):
    ask(geodns, "rtc.voicemesh.test", **{"ecs": SINGAPORE, **variant})
    ask(geodns, "rtc.voicemesh.test", ecs=SINGAPORE)
    assert (geodns.cache_misses, geodns.cache_hits) == (2, 0)


@pytest.mark.parametrize("wire", [
    bytes.fromhex("abcd 0100 0001 0000 0000 0000 c00c 0001 0001"),        # the question name is a pointer
    dns.message.make_query("rtc.voicemesh.test", "A", use_edns=0, options=[
        dns.edns.GenericOption(65001, b"x")]).to_wire(),                   # an option outside the plain shape
    dns.message.make_query("rtc.voicemesh.test", "A", use_edns=1).to_wire(),  # EDNS version 1
    dns.message.make_query("rtc.voicemesh.test", "A").to_wire() + b"\x00",  # trailing byte
])
def test_queries_outside_the_plain_shape_are_answered_but_never_from_the_cache(geodns, wire):
    assert question_key(wire) is None
    for _ in range(2):
        assert geodns.respond(wire, "10.200.0.1") is not None
    assert geodns.cache_hits == 0


def test_the_least_recently_used_answer_is_evicted_first():
    server = GeoDNS(Zone("voicemesh.test", "rtc.voicemesh.test"), lambda address: None, cache_entries=2)
    server.set_edges(EDGES)
    for subnet in ["10.1.1.0/24", "10.1.2.0/24", "10.1.1.0/24", "10.1.3.0/24", "10.1.1.0/24", "10.1.2.0/24"]:
        ask(server, "rtc.voicemesh.test", ecs=subnet)
    assert (server.cache_misses, server.cache_hits) == (4, 2)  # 10.1.2 went when 10.1.3 came


def random_query(rng: random.Random) -> bytes:
    """A query with a random question, client subnet, payload and DO bit: what a cache-busting flood sends."""
    name = rng.choice(["rtc", "RTC", "", "ns1", "x" * rng.randint(1, 60)]) + ".voicemesh.test"
    ecs = dns.edns.ECSOption(str(ipaddress.IPv4Address(rng.getrandbits(32))), rng.randint(1, 32))
    return dns.message.make_query(name.lstrip("."), rng.choice(["A", "AAAA", "TXT", "MX", "CAA"]), use_edns=0,
                                  payload=rng.randint(0, 65535), options=[ecs], want_dnssec=rng.random() < 0.5,
                                  id=rng.getrandbits(16)).to_wire()


@pytest.mark.parametrize("entries, max_bytes", [(100, 1 << 30), (10**6, 40_000)])
def test_a_flood_of_distinct_queries_cannot_grow_the_cache_past_its_bounds(entries, max_bytes):
    server = GeoDNS(Zone("voicemesh.test", "rtc.voicemesh.test"), lambda address: None, cache_entries=entries,
                    cache_bytes=max_bytes)
    server.set_edges(EDGES)
    rng = random.Random(9)
    for n in range(1000):
        server.respond(random_query(rng), f"10.200.{n & 0xFF}.1")
        assert len(server.cache) <= entries and server.cache.bytes <= max_bytes
    assert server.cache_misses > 900 and len(server.cache) > 50


def test_the_cache_bytes_bound_its_real_memory():
    """What stays allocated once a flood has filled the cache is within ``cache_bytes``: ENTRY_OVERHEAD_BYTES
    covers Python's objects. Tailored entries (keyed with the resolver's network) are the larger kind."""
    cache = AnswerCache(10**6, 1 << 20)
    rng = random.Random(11)
    queries = [random_query(rng) for _ in range(3000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n, query in enumerate(queries * 2):
            question = question_key(query)
            key = (question, (4, n)) if n % 2 else question
            cache.put(key, question, rng.randbytes(rng.randint(40, 200)))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert cache.bytes > (1 << 20) * 0.9
    assert grown <= cache.max_bytes, (grown, len(cache))


# --- zone settings ---

@pytest.mark.parametrize("kwargs, reason", [
    ({"mesh_name": "rtc.example.com"}, "outside_zone"),
    ({"mesh_name": "bad..name"}, "bad_name"),
    ({"ttl_s": 0}, "bad_ttl"),
    ({"nameservers": [("ns1.voicemesh.test", "not-an-ip")]}, "bad_address"),
    ({"nameservers": [("ns.example.net", "192.0.2.1")]}, "glue_outside_zone"),
    ({"nameservers": [("rtc.voicemesh.test", "192.0.2.1")]}, "name_clash"),
])
def test_bad_zone_settings_are_refused_with_a_reason(kwargs, reason):
    with pytest.raises(BadZone) as excinfo:
        Zone("voicemesh.test", **{"mesh_name": "rtc.voicemesh.test", **kwargs})
    assert excinfo.value.reason == reason
