"""Geo DNS answers, sans-IO: the nearest healthy edge for a client's location, as DNS wire bytes.

``GeoDNS.respond(query bytes, resolver address)`` returns the response bytes
(or None to drop). It answers authoritatively for one zone (RFC 1034/1035):
``A``/``AAAA`` of the mesh name with the edge nearest to the client by
great-circle distance, ``SOA`` and ``NS`` at the apex, addresses of in-zone
name servers, NXDOMAIN for other names in the zone, REFUSED outside it, never
recursion. The client is the EDNS Client Subnet address (RFC 7871) when the
query carries one, else the resolver's source address; IPv4-mapped IPv6
addresses count as IPv4.

Scope and cache. The answer for a client is a function of its network at the
scope prefix: /24 for IPv4 and /56 for IPv6 (the prefixes RFC 7871 section 11.1
recommends resolvers send), so the location is looked up for that network's
first address, and the ECS scope returned is 24 or 56 (120 for an IPv4-mapped
ECS address). A GeoIP network smaller than the scope therefore does not
steer: a whole /24 gets one answer.

Cache. Rendered NOERROR responses are kept in a bounded LRU (AnswerCache),
keyed on the normalised question (question_key): the name lowercased, QTYPE,
QCLASS, RD, and with EDNS the payload class, DO, padding requested and the ECS
option (echoed, so part of the answer); plus the resolver's network at the
scope prefix when the answer was computed from the resolver's address (no
usable ECS). A hit patches the query's ID and its name's letter case into the
stored bytes (names after the question are compressed pointers to it), so case
variants (DNS 0x20) share one entry. A change of the healthy edges bumps
``generation`` and empties the cache.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from voicemesh.registry import NodeRecord
from voicemesh.wire.addr import parse_hostport
from voicemesh.wire.geo import distance_km

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Location = tuple[float, float]
"""(latitude, longitude) in degrees."""
Locate = Callable[[IPAddress], "Location | None"]
"""Looks an address up in a GeoIP database; None if it has no location."""

SCOPE_PREFIX = {4: 24, 6: 56}
"""Bits of a client address the answer depends on, by IP version (the ECS scope prefix returned)."""
UDP_PAYLOAD = 1232
"""Largest UDP response in bytes with EDNS (the 2020 DNS flag day size); 512 without EDNS (RFC 1035 4.2.1)."""
TCP_PAYLOAD = 65535
"""Largest response over TCP in bytes: the 2-byte length prefix's range (RFC 1035 4.2.2, RFC 7766 8);
the query's EDNS payload size does not apply there (RFC 6891 6.2.3)."""
ACME_LABEL = b"_acme-challenge"
"""The first label of the name an ACME server looks up for a DNS-01 challenge (RFC 8555 8.4)."""
DEFAULT_CACHE_ENTRIES = 100_000
DEFAULT_CACHE_BYTES = 64 << 20
ENTRY_OVERHEAD_BYTES = 640
"""Python object bytes per cache entry beside its response and name (key tuple, dict slot, object headers),
measured with tracemalloc (tests/test_geodns.py), so ``cache_bytes`` bounds the cache's real memory."""
SOA_TIMERS = (3600, 600, 86400)
"""SOA refresh, retry, expire in seconds (no secondaries transfer this zone; the values are conventional)."""

_A, _AAAA = dns.rdatatype.A, dns.rdatatype.AAAA
_IN = dns.rdataclass.IN


class BadZone(ValueError):
    """The zone settings cannot be served.

    ``reason``: "bad_name" (not a domain name), "outside_zone" (the mesh name is not in
    the zone), "bad_address" (a name server address is not an IP address),
    "glue_outside_zone" (an address given for a name server outside the zone),
    "name_clash" (a name server is the mesh name), "bad_ttl" (not 1..86400 s).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{detail} ({reason.replace('_', ' ')})")
        self.reason = reason


class MalformedQuery(ValueError):
    """A datagram that is not a query this server can answer.

    ``reason``: "short_header" (under 12 bytes) and "response" (QR set) are dropped
    unanswered; "malformed" (dnspython cannot parse it, including a bad ECS option,
    RFC 7871 section 7.2.1) and "question_count" (QDCOUNT is not 1) get FORMERR.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason.replace("_", " "))
        self.reason = reason


DROPPED = frozenset({"short_header", "response"})
"""MalformedQuery reasons that are never answered (no header to answer, or not a query)."""


@dataclass(frozen=True)
class EdgeTarget:
    """A healthy edge as DNS sees it: ``address`` is the host of its public relay address."""

    node_id: str
    lat: float
    lon: float
    address: IPAddress


def edge_targets(nodes: Iterable[NodeRecord]) -> tuple[EdgeTarget, ...]:
    """The edges that may be answered, sorted by node id.

    Keeps nodes of role "edge" that are not draining and whose ``public_relay`` is
    ``ip:port`` or ``[ipv6]:port`` with an IP literal; skips the rest.
    """
    targets = []
    for node in nodes:
        if node.role != "edge" or node.draining:
            continue
        try:
            address = ipaddress.ip_address(parse_hostport(node.public_relay)[0])
        except ValueError:
            continue
        targets.append(EdgeTarget(node.node_id, node.lat, node.lon, normalise(address)))
    return tuple(sorted(targets, key=lambda target: target.node_id))


def choose_edge(location: Location | None, edges: Sequence[EdgeTarget], default_edge: str) -> EdgeTarget | None:
    """The edge to send a client at ``location`` to, or None if ``edges`` is empty.

    With a location: the edge nearest by great-circle distance (ties go to the lower
    node id). Without: the edge named ``default_edge``, or if it is not among
    ``edges``, the first of ``edges``.
    """
    if not edges:
        return None
    if location is None:
        return next((edge for edge in edges if edge.node_id == default_edge), edges[0])
    lat, lon = location
    return min(edges, key=lambda edge: (distance_km(lat, lon, edge.lat, edge.lon), edge.node_id))


def normalise(address: IPAddress) -> IPAddress:
    """``address``, or the IPv4 address inside an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``)."""
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_network(address: IPAddress, prefix_len: int) -> IPNetwork:
    """The network whose answer ``address`` gets: the first ``prefix_len`` bits of the
    normalised address, cut to the scope prefix of its version (SCOPE_PREFIX).

    ``prefix_len`` counts bits of the normalised address (for an IPv4-mapped address,
    the bits after the first 96).
    """
    address = normalise(address)
    bits = min(prefix_len, SCOPE_PREFIX[address.version])
    host_bits = address.max_prefixlen - bits
    return ipaddress.ip_network((int(address) >> host_bits << host_bits, bits))


@functools.lru_cache(maxsize=65536)
def source_prefix(source: str) -> tuple[int, int]:
    """A resolver's network at the scope prefix, as ``(IP version, network address >> host bits)``:
    client_network() of its source address (text, as the socket reports it), in the compact form
    the answer cache keys on (cached per address)."""
    address = ipaddress.ip_address(source)
    network = client_network(address, address.max_prefixlen)
    return network.version, int(network.network_address) >> (network.max_prefixlen - network.prefixlen)


def mmdb_locator(reader) -> Locate:
    """A Locate over an open ``maxminddb`` Reader of a GeoIP2/GeoLite2 City database.

    The location is the record's ``location.latitude``/``longitude``; an address the
    database does not hold, or holds without coordinates, has none.
    """

    def locate(address: IPAddress) -> Location | None:
        try:
            record = reader.get(address)
        except ValueError:  # an IPv6 address in an IPv4-only database
            return None
        location = record.get("location") if isinstance(record, dict) else None
        if not isinstance(location, dict) or "latitude" not in location or "longitude" not in location:
            return None
        return float(location["latitude"]), float(location["longitude"])

    return locate


def parse_nameservers(spec: str) -> list[tuple[str, str]]:
    """Parse ``"ns1.example=192.0.2.53,ns1.example=2001:db8::53,ns2.other.example"``
    into ``[(name, address or ""), ...]``; Zone checks the names and addresses."""
    pairs = []
    for item in spec.split(","):
        name, _, address = item.strip().partition("=")
        if name:
            pairs.append((name.strip(), address.strip()))
    return pairs


def _name(text: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise BadZone("bad_name", f"{text!r} is not a domain name: {exc}") from None


class Zone:
    """The zone served: origin, mesh name, name servers, TTL.

    ``origin`` and ``mesh_name`` are absolute names (a trailing dot is optional);
    the mesh name must be in the zone (it may be the apex). ``nameservers`` are
    ``(name, address)`` pairs (address "" for none): each name becomes an NS record,
    and an address of an in-zone name is served as its A or AAAA record. Without
    name servers the NS is ``ns1.<origin>``. ``ttl_s`` (seconds) is the TTL of every
    record and the SOA minimum, so negative answers are cached as briefly (RFC 2308 5).

    ``acme_challenge_zone`` (an absolute name outside this zone, "" for none) delegates ACME
    DNS-01 (RFC 8555 8.4): ``_acme-challenge.<name>`` for the mesh name and the apex is a CNAME
    to ``_acme-challenge.<name relative to the origin>.<acme_challenge_zone>`` (the apex maps to
    ``_acme-challenge.<acme_challenge_zone>``), a name in a zone an ACME client can write TXT
    records to (a Route 53 zone), since this server holds no TXT records.
    Raises BadZone.
    """

    def __init__(self, origin: str, mesh_name: str, *, ttl_s: int = 30,
                 nameservers: Sequence[tuple[str, str]] = (), acme_challenge_zone: str = "") -> None:
        self.origin = _name(origin)
        self.mesh_name = _name(mesh_name)
        if not self.mesh_name.is_subdomain(self.origin):
            raise BadZone("outside_zone", f"mesh name {self.mesh_name} is not in zone {self.origin}")
        self.acme_challenge_zone = _name(acme_challenge_zone) if acme_challenge_zone else None
        if self.acme_challenge_zone is not None and self.acme_challenge_zone.is_subdomain(self.origin):
            raise BadZone("acme_zone_inside", f"ACME challenge zone {self.acme_challenge_zone} is inside "
                                              f"zone {self.origin}; give a zone this server does not serve")
        if not 1 <= ttl_s <= 86400:
            raise BadZone("bad_ttl", f"TTL {ttl_s} s is not within 1..86400")
        self.ttl_s = ttl_s
        ns_names: list[dns.name.Name] = []
        self.records: dict[tuple[dns.name.Name, int], list[dns.rdata.Rdata]] = {}
        for text, address in nameservers or [(f"ns1.{self.origin}", "")]:
            name = _name(text)
            if name not in ns_names:
                ns_names.append(name)
            if not address:
                continue
            if not name.is_subdomain(self.origin):
                raise BadZone("glue_outside_zone", f"name server {name} is outside the zone; give no address")
            if name == self.mesh_name:
                raise BadZone("name_clash", f"name server {name} is the mesh name")
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                raise BadZone("bad_address", f"{address!r} for {name} is not an IP address") from None
            self.records.setdefault((name, _A if ip.version == 4 else _AAAA), []).append(_address_rdata(ip))
        self.records[(self.origin, dns.rdatatype.NS)] = [
            dns.rdata.from_text(_IN, dns.rdatatype.NS, name.to_text()) for name in ns_names
        ]
        self.soa = dns.rdata.from_text(
            _IN, dns.rdatatype.SOA,
            f"{ns_names[0]} hostmaster.{self.origin} 1 {' '.join(map(str, SOA_TIMERS))} {ttl_s}",
        )
        self.records[(self.origin, dns.rdatatype.SOA)] = [self.soa]
        self.names: set[dns.name.Name] = set()
        for name in [self.mesh_name, *(owner for owner, _ in self.records)]:
            while name.is_subdomain(self.origin) and name not in self.names:
                self.names.add(name)  # the name and its ancestors (empty non-terminals exist, RFC 8020)
                name = name.parent()
        self.acme_targets: dict[dns.name.Name, dns.rdata.Rdata] = {}
        if self.acme_challenge_zone is not None:
            for name in {self.origin, self.mesh_name}:
                relative = dns.name.Name((ACME_LABEL, *name.relativize(self.origin).labels))
                self.acme_targets[dns.name.Name((ACME_LABEL, *name.labels))] = dns.rdata.from_text(
                    _IN, dns.rdatatype.CNAME, relative.derelativize(self.acme_challenge_zone).to_text())


def _address_rdata(address: IPAddress) -> dns.rdata.Rdata:
    return dns.rdata.from_text(_IN, _A if address.version == 4 else _AAAA, str(address))


QuestionKey = tuple
"""What a response depends on in its query, from question_key()."""
CacheKey = tuple
"""A question key (with TCP_PAYLOAD for a TCP query), with the resolver's network (source_prefix) when the
answer was chosen by it."""


def question_key(data: bytes) -> QuestionKey | None:
    """The normalised question of a query datagram, for the answer cache, or None if the query is
    not of the plain shape answered from the cache (it is then parsed and rendered every time).

    The plain shape (RFC 1035 4.1, RFC 6891 6.1): opcode QUERY, one question whose name has no
    compression pointer, no answer or authority records, and either no additional record or one
    EDNS version 0 OPT record whose options are only ECS (at most one), PADDING, COOKIE (of a valid
    length, RFC 7873 4) and NSID, ending exactly at the datagram's end. The key is
    ``(name lowercased, QTYPE and QCLASS, RD)`` without EDNS and ``(name lowercased, QTYPE and
    QCLASS, RD, payload limit, DO, ECS option data or None, padding requested)`` with it: everything
    the rendered response depends on but the ID, the name's letter case and the client network.
    Queries that share a key and both parse are answered with the same bytes but for those three;
    the ECS data is raw, so only ECS options that parsed on the first miss ever hit.
    """
    n = len(data)
    if n < 17 or data[2] & 0xF8 or data[4:10] != b"\x00\x01\x00\x00\x00\x00" or data[10] or data[11] > 1:
        return None
    end = 12
    while (length := data[end]) != 0:
        end += length + 1
        if length > 63 or end >= n:
            return None
    end += 1
    if end - 12 > 255 or end + 4 > n:
        return None
    name, rd, pos = data[12:end].lower(), data[2] & 1, end + 4
    if not data[11]:
        return (name, data[end:pos], rd) if pos == n else None
    if n < pos + 11 or data[pos : pos + 3] != b"\x00\x00\x29" or data[pos + 6]:
        return None
    payload = int.from_bytes(data[pos + 3 : pos + 5], "big")
    do = data[pos + 7] & 0x80
    stop = pos + 11 + int.from_bytes(data[pos + 9 : pos + 11], "big")
    if stop != n:
        return None
    ecs, padded, pos = None, False, pos + 11
    while pos < n:
        if pos + 4 > n:
            return None
        code, length = int.from_bytes(data[pos : pos + 2], "big"), int.from_bytes(data[pos + 2 : pos + 4], "big")
        pos += 4 + length
        if pos > n:
            return None
        if code == dns.edns.OptionType.ECS and ecs is None:
            ecs = data[pos - length : pos]
        elif code == dns.edns.OptionType.PADDING:
            padded = True
        elif not (code == dns.edns.OptionType.NSID
                  or (code == dns.edns.OptionType.COOKIE and (length == 8 or 16 <= length <= 40))):
            return None
    return name, data[end : end + 4], rd, min(max(payload, 512), UDP_PAYLOAD), do, ecs, padded


class AnswerCache:
    """An LRU of rendered responses by question key, bounded in entries and in bytes.

    An entry costs its response's bytes, its name's and ECS data's bytes, and ENTRY_OVERHEAD_BYTES;
    ``put`` evicts least recently used entries until both bounds hold (an entry larger than
    ``max_bytes`` is not kept). ``max_entries`` 0 disables the cache. ``bytes`` is the current cost.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[CacheKey, tuple[bytes, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> bytes | None:
        """The response stored under ``key`` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: CacheKey, question: QuestionKey, wire: bytes) -> None:
        """Store ``wire`` under ``key`` (``question`` itself, or with the client network)."""
        ecs = question[5] if len(question) > 3 else None
        cost = len(wire) + len(question[0]) + len(ecs or b"") + ENTRY_OVERHEAD_BYTES
        if not self.max_entries or cost > self.max_bytes:
            return
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        while entries and (len(entries) >= self.max_entries or self.bytes + cost > self.max_bytes):
            self.bytes -= entries.popitem(last=False)[1][1]
        entries[key] = (wire, cost)
        self.bytes += cost

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self.bytes = 0


@dataclass(frozen=True)
class _Client:
    """Who the answer is for: ``network`` (at the scope prefix), the query's ECS option if any, the ECS
    scope to return with a tailored answer, and whether ``network`` is the resolver's."""

    network: IPNetwork
    ecs: dns.edns.ECSOption | None
    ecs_scope: int
    from_source: bool


class GeoDNS:
    """The authoritative geo DNS state machine: zone, healthy edges, answer cache, counters.

    ``locate`` finds a client network's location (see mmdb_locator); ``default_edge``
    is the node id answered for clients without one. ``cache_entries`` and
    ``cache_bytes`` bound the cache of rendered responses (AnswerCache; 0 entries
    disables it), so a flood of distinct queries costs rendering time and evicts,
    never grows memory. Counters: ``cache_hits``, ``cache_misses``, ``drops`` and
    ``formerr`` by MalformedQuery reason, ``rcodes`` of rendered (uncached)
    responses by name.
    """

    def __init__(self, zone: Zone, locate: Locate, *, default_edge: str = "",
                 cache_entries: int = DEFAULT_CACHE_ENTRIES, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.zone = zone
        self.locate = locate
        self.default_edge = default_edge
        self.cache = AnswerCache(cache_entries, cache_bytes)
        self.edges: tuple[EdgeTarget, ...] = ()
        self.generation = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.drops: Counter[str] = Counter()
        self.formerr: Counter[str] = Counter()
        self.rcodes: Counter[str] = Counter()

    def set_edges(self, nodes: Iterable[NodeRecord]) -> bool:
        """Take the healthy edges from registry records (see edge_targets).

        If they differ from the current ones (an edge came, went, started draining,
        moved or changed address), bump ``generation``, empty the cache and return
        True; other changes (load, capacity) return False and keep the cache.
        """
        edges = edge_targets(nodes)
        if edges == self.edges:
            return False
        self.edges = edges
        self.generation += 1
        self.cache.clear()
        return True

    def respond(self, data: bytes, source: str, *, tcp: bool = False) -> bytes | None:
        """The response to the query ``data`` (a UDP datagram, or a TCP message without its
        length prefix when ``tcp``) from resolver address ``source`` (text, as the socket
        reports it), or None to send nothing. Never raises.

        UDP responses fit the payload the query allows (512 bytes without EDNS, else the
        advertised size up to UDP_PAYLOAD), truncated with TC set otherwise, so the client
        retries over TCP (RFC 7766 5); TCP responses may be up to TCP_PAYLOAD bytes.
        A malformed query gets a FORMERR header (12 bytes, no larger than the query).
        """
        question = question_key(data)
        if question is not None:
            key = (question, TCP_PAYLOAD) if tcp else question  # TCP answers are never truncated
            cached = self.cache.get(key)
            if cached is None:
                cached = self.cache.get((key, source_prefix(source)))
            if cached is not None:
                self.cache_hits += 1
                end = 12 + len(question[0])
                return data[:2] + cached[2:12] + data[12:end] + cached[end:]
        return self._render(data, source, question, tcp)

    def _render(self, data: bytes, source: str, question: QuestionKey | None, tcp: bool) -> bytes | None:
        self.cache_misses += 1
        try:
            query = parse_query(data)
        except MalformedQuery as exc:
            if exc.reason in DROPPED:
                self.drops[exc.reason] += 1
                return None
            self.formerr[exc.reason] += 1
            return formerr(data)
        response, from_source = self.answer(query, ipaddress.ip_address(source))
        if tcp:
            limit = TCP_PAYLOAD
        else:
            limit = min(max(query.payload, 512), UDP_PAYLOAD) if query.edns >= 0 else 512
        wire = response.to_wire(max_size=limit, prefer_truncation=True)
        rcode = response.rcode()
        self.rcodes[dns.rcode.to_text(rcode)] += 1
        if rcode == dns.rcode.NOERROR and question is not None:
            key = (question, TCP_PAYLOAD) if tcp else question
            self.cache.put((key, source_prefix(source)) if from_source else key, question, wire)
        return wire

    def answer(self, query: dns.message.Message, source: IPAddress) -> tuple[dns.message.Message, bool]:
        """The response to a parsed ``query`` (one question) from resolver address ``source``,
        and whether it was computed from ``source`` (no usable ECS option).

        RFC 1035 4.1.1 (NOTIMP for opcodes other than QUERY, REFUSED outside the zone),
        RFC 6891 6.1.3 (BADVERS for EDNS versions above 0), RFC 2308 (NXDOMAIN and
        NODATA with the SOA), RFC 7871 7.2.1 (ECS echoed with a scope prefix), RFC 8482
        (ANY answered with one synthesised HINFO).

        ``A`` answers the nearest healthy edge with an IPv4 relay address, ``AAAA`` the
        nearest with an IPv6 one (choose_edge over the edges of that family), so a
        single-stack client always gets an edge it can reach; NODATA if no healthy
        edge has that family, SERVFAIL if no edge is healthy at all.
        """
        response = dns.message.make_response(query, our_payload=UDP_PAYLOAD)
        if query.edns >= 0:
            response.ednsflags |= query.ednsflags & dns.flags.DO  # RFC 3225 3
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response, False
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
            return response, False
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        client = _client(query, source)
        scope, tailored = 0, False
        zone = self.zone
        if question.rdclass != _IN or not qname.is_subdomain(zone.origin):
            response.set_rcode(dns.rcode.REFUSED)
        else:
            response.flags |= dns.flags.AA
            if qname in zone.acme_targets:  # RFC 1034 3.6.2: a CNAME answers every type
                response.answer.append(dns.rrset.from_rdata(qname, zone.ttl_s, zone.acme_targets[qname]))
            elif qname not in zone.names:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif qtype == dns.rdatatype.ANY:
                response.answer.append(dns.rrset.from_text(qname, zone.ttl_s, _IN, dns.rdatatype.HINFO,
                                                           '"RFC8482" ""'))
            elif qname == zone.mesh_name and qtype in (_A, _AAAA):
                scope, tailored = client.ecs_scope, True
                edges = [edge for edge in self.edges if (edge.address.version == 4) == (qtype == _A)]
                edge = choose_edge(self.locate(client.network.network_address), edges, self.default_edge)
                if edge is not None:
                    response.answer.append(dns.rrset.from_rdata(qname, zone.ttl_s, _address_rdata(edge.address)))
                elif not self.edges:
                    response.flags &= ~dns.flags.AA
                    response.set_rcode(dns.rcode.SERVFAIL)
            elif (qname, qtype) in zone.records:
                response.answer.append(dns.rrset.from_rdata_list(qname, zone.ttl_s, zone.records[(qname, qtype)]))
            if not response.answer and response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                response.authority.append(dns.rrset.from_rdata(zone.origin, zone.ttl_s, zone.soa))
        if client.ecs is not None:
            ecs = dns.edns.ECSOption(client.ecs.address, client.ecs.srclen, scope)
            response.use_edns(0, response.ednsflags, UDP_PAYLOAD, query.payload, options=[ecs], pad=response.pad)
        return response, tailored and client.from_source


def _client(query: dns.message.Message, source: IPAddress) -> _Client:
    """The client network from the query's ECS option (RFC 7871 7.2.1) if it carries
    address bits, else from the resolver's ``source`` address."""
    ecs = next((option for option in query.options if isinstance(option, dns.edns.ECSOption)), None)
    if ecs is not None:
        address = ipaddress.ip_address(ecs.address)
        mapped = address.version == 6 and address.ipv4_mapped is not None
        bits = ecs.srclen - 96 if mapped else ecs.srclen
        if bits > 0:
            network = client_network(address, bits)
            return _Client(network, ecs, SCOPE_PREFIX[network.version] + (96 if mapped else 0), False)
    return _Client(client_network(source, source.max_prefixlen), ecs, 0, True)


def parse_query(data: bytes) -> dns.message.Message:
    """Parse a DNS query datagram (RFC 1035 4.1) with exactly one question.

    Raises MalformedQuery: "short_header", "response", "malformed", "question_count".
    """
    if len(data) < 12:
        raise MalformedQuery("short_header")
    if data[2] & 0x80:
        raise MalformedQuery("response")
    try:
        query = dns.message.from_wire(data)
    except Exception:  # any bytes from the network: dnspython raises many exception types
        raise MalformedQuery("malformed") from None
    if len(query.question) != 1:
        raise MalformedQuery("question_count")
    return query


def formerr(data: bytes) -> bytes:
    """A FORMERR response to the query header at the start of ``data`` (12+ bytes):
    its ID, opcode and RD, no sections (RFC 1035 4.1.1)."""
    flags = int.from_bytes(data[2:4], "big")
    response = dns.message.Message(id=int.from_bytes(data[:2], "big"))
    response.flags = dns.flags.QR | (flags & dns.flags.RD)
    response.set_opcode(dns.opcode.from_flags(flags))
    response.set_rcode(dns.rcode.FORMERR)
    return response.to_wire()
