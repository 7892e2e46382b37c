"""Fuzzing geo DNS answers (edge/geodns.py) with hypothesis: ``respond`` on arbitrary datagrams and on
mutations of well-formed queries never raises, answers only with a parseable response no larger than
the query allows, and the answer cache is transparent: a response served from the cache is the bytes a
fresh server renders for that query. Every response can pass the rate limiter (edge/rrl.py)."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from voicemesh.edge.geodns import UDP_PAYLOAD, GeoDNS, Zone, parse_nameservers, question_key
from voicemesh.edge.rrl import category, slip
from voicemesh.registry import NodeRecord

pytestmark = pytest.mark.unit

ZONE = Zone("voicemesh.test", "rtc.voicemesh.test", nameservers=parse_nameservers("ns1.voicemesh.test=10.9.9.53"))
EDGES = [NodeRecord("edge", "eu", "edge-fra", public_relay="10.9.0.4:3478", lat=50.1, lon=8.7),
         NodeRecord("edge", "asia", "edge-sin", public_relay="10.9.0.3:3478", lat=1.29, lon=103.85),
         NodeRecord("edge", "us", "edge-sjc", public_relay="[fd00::6]:3478", lat=37.3, lon=-121.9)]


def locate(address):
    """Any deterministic location: the first octet picks an edge's region (None for some)."""
    first = address.packed[0]
    return None if first % 4 == 0 else (first % 90 - 45.0, first * 1.4 - 180)


def server(**kwargs) -> GeoDNS:
    geodns = GeoDNS(ZONE, locate, default_edge="edge-fra", **kwargs)
    geodns.set_edges(EDGES)
    return geodns


names = st.one_of(
    st.sampled_from(["rtc.voicemesh.test", "voicemesh.test", "ns1.voicemesh.test", "x.rtc.voicemesh.test",
                     "example.com", "."]),
    st.lists(st.text("abcXYZ-019", min_size=1, max_size=10), min_size=1, max_size=4).map(
        lambda labels: ".".join(labels) + ".voicemesh.test"),
).flatmap(lambda name: st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
    lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper, strict=True))))
ecs_options = st.one_of(
    st.builds(lambda a, n: dns.edns.ECSOption(a, n), st.ip_addresses(v=4).map(str), st.integers(0, 32)),
    st.builds(lambda a, n: dns.edns.ECSOption(a, n), st.ip_addresses(v=6).map(str), st.integers(0, 128)),
)
options = st.lists(st.one_of(
    ecs_options,
    st.just(dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"")),
    st.builds(dns.edns.CookieOption, st.binary(min_size=8, max_size=8), st.sampled_from([b"", b"s" * 16])),
    st.builds(dns.edns.GenericOption, st.integers(0, 65535), st.binary(max_size=8)),
), max_size=2)


@st.composite
def queries(draw) -> bytes:
    """A well-formed query: random name and letter case, type, class, flags, EDNS version, payload, DO, options."""
    edns = draw(st.sampled_from([-1, 0, 0, 0, 1]))
    query = dns.message.make_query(
        draw(names), draw(st.sampled_from(["A", "AAAA", "SOA", "NS", "TXT", "ANY", "MX", "HINFO", "TYPE65280"])),
        rdclass=draw(st.sampled_from(["IN", "IN", "CH", "ANY"])), use_edns=edns,
        payload=draw(st.integers(0, 65535)), want_dnssec=draw(st.booleans()) and edns >= 0,
        options=draw(options) if edns >= 0 else None, id=draw(st.integers(0, 65535)))
    query.flags = draw(st.integers(0, 0xFFFF)) & ~(dns.flags.QR | 0x7800) if draw(st.booleans()) else query.flags
    return query.to_wire()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(queries()))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data) + draw(st.binary(max_size=6))


sources = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))


def check_response(data: bytes, response: bytes | None) -> None:
    """A response, if any: a DNS response to this query's ID within the size the query allows, that the
    rate limiter can categorise and slip."""
    if response is None:
        return
    parsed = dns.message.from_wire(response)
    assert parsed.flags & dns.flags.QR and response[:2] == data[:2]
    try:
        query = dns.message.from_wire(data)
    except Exception:  # any bytes: dnspython raises many types
        assert len(response) == 12  # a FORMERR header
    else:
        assert len(response) <= (min(max(query.payload, 512), UDP_PAYLOAD) if query.edns >= 0 else 512)
    assert category(response) in {"answer", "nodata", "nxdomain", "error"}
    truncated = dns.message.from_wire(slip(response))
    assert truncated.flags & dns.flags.TC and truncated.question == parsed.question


@given(st.one_of(st.binary(max_size=80), queries(), mutated()), sources)
def test_respond_never_raises_and_answers_within_the_allowed_size(data, source):
    geodns = server()
    response = geodns.respond(data, source)
    check_response(data, response)
    assert geodns.respond(data, source) == response  # again, perhaps from the cache


def variant(data: bytes, qid: int, upper: int) -> bytes:
    """``data`` with another ID and, if it is a plain query, the letters of its name in other case."""
    key = question_key(data)
    name_end = 12 + len(key[0]) if key else 12
    name = bytes(c ^ 0x20 if chr(c).isalpha() and upper >> (n % 60) & 1 else c
                 for n, c in enumerate(data[12:name_end]))
    return qid.to_bytes(2, "big") + data[2:12] + name + data[name_end:]


@st.composite
def exchanges(draw) -> list[tuple[bytes, str]]:
    """Queries from a few resolvers, repeating a few questions with other IDs and letter case (cache hits)."""
    pool = draw(st.lists(st.one_of(queries(), queries(), mutated()), min_size=1, max_size=3))
    return [(variant(draw(st.sampled_from(pool)), draw(st.integers(0, 65535)), draw(st.integers(0, 2**60))),
             draw(st.sampled_from(["192.0.2.1", "192.0.2.99", "10.0.0.1", "2001:db8::1", "::ffff:192.0.2.7"])))
            for _ in range(draw(st.integers(2, 8)))]


@given(exchanges())
def test_the_cache_answers_exactly_what_a_fresh_server_renders(exchanges):
    """Through one server with a cache, every response equals that of a server without one."""
    cached, fresh = server(), server(cache_entries=0)
    for data, source in exchanges:
        assert cached.respond(data, source) == fresh.respond(data, source)
    event("served from the cache" if cached.cache_hits else "all rendered")
    assert len(cached.cache) <= 3 * 3  # questions by resolver networks (192.0.2/24, 10.0.0/24, 2001:db8::/56)


@given(queries())
def test_every_plain_query_has_a_key_and_its_case_variants_share_it(data):
    key = question_key(data)
    if key is None:
        return
    name_end = 12 + len(key[0])
    assert question_key(data[:12] + data[12:name_end].upper() + data[name_end:]) == key
