"""The geo DNS server over real UDP, queried with dig (Debian bind9-dnsutils): ECS steering and scope,
the zone's answers and errors, malformed datagrams, response rate limiting against a spoofed flood, edges
leaving with their lease, and `voicemesh dns` as its own process against a real etcd. The GeoIP data is
MaxMind's official GeoIP2-City-Test.mmdb."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

from voicemesh.edge.config import DnsConfig
from voicemesh.edge.dns_server import DnsServer, topology_defaults
from voicemesh.registry import MemoryRegistry, MemoryStore, NodeRecord
from voicemesh.registry.etcd import EtcdRegistry

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = json.loads((REPO / "infra" / "topology.json").read_text())
MAXMIND_TEST_DB = REPO / "tests" / "data" / "GeoIP2-City-Test.mmdb"

# MaxMind test networks: Changchun (nearest edge Tokyo), San Diego (San Jose), the Philippines (Singapore).
CHANGCHUN, SAN_DIEGO6, PHILIPPINES = "175.16.199.0/24", "2001:480:10::/56", "202.196.224.0/24"

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(shutil.which("dig") is None, reason="dig not found: apt-get install bind9-dnsutils")]


def relay(site: str) -> str:
    """The public relay address of the edge at ``site``: IPv6 for San Jose, IPv4 elsewhere."""
    n = list(TOPOLOGY["sites"]).index(site) + 1
    return f"[fd00::{n}]:3478" if site == "sjc" else f"10.9.0.{n}:3478"


def edge(site: str, **fields) -> NodeRecord:
    where = TOPOLOGY["sites"][site]
    return NodeRecord("edge", site, f"edge-{site}", public_relay=relay(site), lat=where["lat"], lon=where["lon"],
                      **fields)


def host(site: str) -> str:
    return relay(site).rpartition(":")[0].strip("[]")


@dataclass
class Dig:
    """What dig printed: status, header flags, answer and authority records, the ECS option."""

    status: str
    flags: set[str]
    answer: list[str]
    authority: list[str]
    client_subnet: str | None

    @classmethod
    def parse(cls, text: str) -> Dig:
        def section(title: str) -> list[str]:
            match = re.search(rf";; {title} SECTION:\n(.*?)(?:\n\n|\Z)", text, re.S)
            return [" ".join(line.split()) for line in match.group(1).splitlines()] if match else []

        subnet = re.search(r"CLIENT-SUBNET: (\S+)", text)
        flags = set(re.search(r"flags: ([a-z ]*);", text).group(1).split())
        return cls(re.search(r"status: (\w+)", text).group(1), flags, section("ANSWER"), section("AUTHORITY"),
                   subnet.group(1) if subnet else None)

    @property
    def addresses(self) -> list[str]:
        return [line.split()[-1] for line in self.answer]


async def dig(port: int, *args: str) -> Dig:
    """Query 127.0.0.1:port with dig (no recursion wanted, no cookie) and parse its output."""
    proc = await asyncio.create_subprocess_exec(
        "dig", "@127.0.0.1", "-p", str(port), "+norec", "+nocookie", "+time=2", "+tries=3", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out + err).decode()
    return Dig.parse(out.decode())


async def eventually(predicate, what: str, deadline_s: float = 20.0) -> None:
    """Await ``predicate()`` every 50 ms until it is true; fail after a generous deadline."""
    deadline = time.monotonic() + deadline_s
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def config(**fields) -> DnsConfig:
    return DnsConfig(**{"bind": "127.0.0.1:0", "geoip_db": str(MAXMIND_TEST_DB), "default_edge": "edge-fra",
                        "ns": "ns1.voicemesh.test=127.0.0.1", **fields})


@pytest.fixture
async def mesh(request):
    """A DNS server on loopback following a MemoryRegistry where every topology edge is registered,
    each by its own registry (its own lease). Yields (server, {site: registry}). Its rate limiter's
    clock stands still, so a test's budget of responses is exact; indirect parameters are DnsConfig fields."""
    store = MemoryStore()
    registries = {}
    for site in TOPOLOGY["sites"]:
        registries[site] = MemoryRegistry(store)
        await registries[site].start()
        await registries[site].register(edge(site))
    watcher = MemoryRegistry(store)
    await watcher.start()
    server = DnsServer.from_config(config(**getattr(request, "param", {})), clock=lambda: 0.0)
    server.start(watcher)
    yield server, registries
    server.close()
    for registry in [*registries.values(), watcher]:
        await registry.close()


async def test_dig_with_a_subnet_gets_the_nearest_edge_and_a_scope(mesh):
    server, _ = mesh
    port = server.address[1]
    answer = await dig(port, "rtc.voicemesh.test", "A", f"+subnet={CHANGCHUN}")
    assert (answer.status, answer.flags) == ("NOERROR", {"qr", "aa"})
    assert answer.answer == [f"rtc.voicemesh.test. 30 IN A {host('nrt')}"]
    assert answer.client_subnet == f"{CHANGCHUN}/24"
    assert (await dig(port, "rtc.voicemesh.test", f"+subnet={PHILIPPINES}")).addresses == [host("sin")]
    aaaa = await dig(port, "rtc.voicemesh.test", "AAAA", f"+subnet={SAN_DIEGO6}")
    assert aaaa.addresses == [host("sjc")]
    assert aaaa.client_subnet == f"{SAN_DIEGO6}/56"


async def test_dig_without_a_location_gets_the_default_edge(mesh):
    server, _ = mesh
    plain = await dig(server.address[1], "rtc.voicemesh.test")  # 127.0.0.1 is not in the database
    assert plain.addresses == [host("fra")]
    assert plain.client_subnet is None
    zero = await dig(server.address[1], "rtc.voicemesh.test", "+subnet=0")
    assert (zero.addresses, zero.client_subnet) == ([host("fra")], "0.0.0.0/0/0")


async def test_dig_soa_ns_nxdomain_and_refused(mesh):
    server, _ = mesh
    port = server.address[1]
    soa = await dig(port, "voicemesh.test", "SOA")
    assert soa.answer == ["voicemesh.test. 30 IN SOA ns1.voicemesh.test. hostmaster.voicemesh.test. "
                          "1 3600 600 86400 30"]
    assert (await dig(port, "voicemesh.test", "NS")).answer == ["voicemesh.test. 30 IN NS ns1.voicemesh.test."]
    assert (await dig(port, "ns1.voicemesh.test", "A")).addresses == ["127.0.0.1"]
    missing = await dig(port, "nope.voicemesh.test", "A")
    assert (missing.status, missing.answer) == ("NXDOMAIN", [])
    assert missing.authority[0].startswith("voicemesh.test. 30 IN SOA")
    refused = await dig(port, "www.example.com", "A", "+recurse")
    assert (refused.status, refused.answer) == ("REFUSED", [])
    assert "ra" not in refused.flags and "aa" not in refused.flags


async def test_malformed_datagrams_are_dropped_or_formerr_and_the_server_keeps_answering(mesh):
    server, _ = mesh
    query = dns.message.make_query("rtc.voicemesh.test", "A", id=7)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(server.address)
        malformed = b"\x00\x09\x01\x00" + b"\xff" * 30  # ID 9, counts and records that run off the end
        for garbage in [b"\x01", dns.message.make_response(query).to_wire(), malformed]:
            sock.send(garbage)
        sock.send(query.to_wire())
        formerr = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(sock, 2048), 10))
        answer = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(sock, 2048), 10))
    assert (formerr.id, formerr.rcode()) == (9, dns.rcode.FORMERR)
    assert (answer.id, answer.rcode()) == (7, dns.rcode.NOERROR)
    stats = server.stats()
    assert stats["drops"] == {"short_header": 1, "response": 1}
    assert stats["formerr"] == {"malformed": 1}
    assert (await dig(server.address[1], "rtc.voicemesh.test")).status == "NOERROR"


def bound_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on ``sock``."""
    received = []
    while True:
        try:
            received.append(sock.recv(4096))
        except BlockingIOError:
            return received


@pytest.mark.parametrize("mesh", [{"rrl_answers_per_s": 5, "rrl_slip": 2}], indirect=True)
async def test_a_spoofed_flood_gets_at_most_the_limit_back_and_another_prefix_is_answered(mesh):
    """Queries forged in the name of 127.0.0.0/24 (sent from four of its addresses: what the server sees of a
    spoofed flood) get 5 full answers in all, then one truncated slip per two queries, never more bytes than
    were sent; a resolver in 127.0.1.0/24 is answered in full throughout."""
    server, _ = mesh
    query = dns.message.make_query("voicemesh.test", "SOA", use_edns=0, payload=1232, id=1).to_wire()
    loop = asyncio.get_running_loop()
    victims = [bound_socket(f"127.0.0.{n}") for n in range(10, 14)]
    resolver = bound_socket("127.0.1.1")
    try:
        received: list[bytes] = []
        for _ in range(5):
            for _ in range(20):
                for victim in victims:
                    victim.sendto(query, server.address)
            resolver.sendto(query, server.address)
            answer = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(resolver, 4096), 10))
            assert (answer.rcode(), len(answer.answer), answer.flags & dns.flags.TC) == (dns.rcode.NOERROR, 1, 0)
            for victim in victims:  # answered in order: the flood before the resolver is all in
                received += drain(victim)
        full = [wire for wire in received if not dns.message.from_wire(wire).flags & dns.flags.TC]
        slips = [wire for wire in received if dns.message.from_wire(wire).flags & dns.flags.TC]
        flood = 5 * 20 * len(victims)
        assert len(full[0]) > 2 * len(query)  # what an unlimited server would reflect: over twice the query
        assert len(full) <= 5 and len(slips) <= (flood - 5) // 2
        assert sum(map(len, received)) <= 5 * len(full[0]) + (flood - 5) // 2 * len(slips[0]) < flood * len(query)
        assert len(slips[0]) < len(query)
        rrl = server.stats()["rrl"]
        assert (rrl["sent"], rrl["slipped"], rrl["dropped"]) == (
            {"answer": 5 + 5}, {"answer": (flood - 5) // 2}, {"answer": flood - 5 - (flood - 5) // 2})
    finally:
        for sock in [*victims, resolver]:
            sock.close()


async def test_a_closed_or_draining_edge_leaves_the_answers(mesh):
    server, registries = mesh
    port = server.address[1]
    assert (await dig(port, "rtc.voicemesh.test", f"+subnet={CHANGCHUN}")).addresses == [host("nrt")]
    await registries["nrt"].close()
    assert (await dig(port, "rtc.voicemesh.test", f"+subnet={CHANGCHUN}")).addresses == [host("sin")]
    await registries["sin"].register(edge("sin", draining=True))
    assert (await dig(port, "rtc.voicemesh.test", f"+subnet={CHANGCHUN}")).addresses == [host("bom")]
    assert server.stats()["generation"] == 3


# A node process that registers the Tokyo edge on a 2 s lease, says so, and sleeps until it is killed.
DOOMED_EDGE = """
import asyncio, sys
from voicemesh.registry.etcd import EtcdRegistry
from voicemesh.registry import NodeRecord

async def main():
    registry = EtcdRegistry([sys.argv[1]], lease_ttl_s=2)
    await registry.start()
    await registry.register(NodeRecord.from_json(sys.argv[2].encode()))
    print("registered", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_an_edge_that_stops_heartbeating_disappears_from_the_answers(etcd):
    others = EtcdRegistry([etcd.endpoint])
    watcher = EtcdRegistry([etcd.endpoint])
    await others.start()
    await others.register(edge("sin"))
    await watcher.start()
    server = DnsServer.from_config(config())
    server.start(watcher)
    node = await asyncio.create_subprocess_exec(sys.executable, "-c", DOOMED_EDGE, etcd.endpoint,
                                                edge("nrt").to_json().decode(), cwd=REPO,
                                                stdout=asyncio.subprocess.PIPE)
    try:
        assert await asyncio.wait_for(node.stdout.readline(), 20) == b"registered\n"

        async def answered(site: str) -> bool:
            answer = await dig(server.address[1], "rtc.voicemesh.test", f"+subnet={CHANGCHUN}")
            return answer.addresses == [host(site)]

        await eventually(lambda: answered("nrt"), "the Tokyo edge in the answers")
        node.kill()  # no close(): the lease runs out
        await node.wait()
        await eventually(lambda: answered("sin"), "the Tokyo edge to leave the answers")
    finally:
        if node.returncode is None:
            node.kill()
            await node.wait()
        server.close()
        await watcher.close()
        await others.close()


async def test_voicemesh_dns_runs_as_a_process_against_etcd(etcd, tmp_path):
    registry = EtcdRegistry([etcd.endpoint])
    await registry.start()
    for site in ["fra", "nrt", "sjc"]:
        await registry.register(edge(site))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicemesh", "dns", "--topology", str(REPO / "infra" / "topology.json"),
         "--bind", f"127.0.0.1:{port}", "--default-edge", "edge-fra", "--ttl-s", "20"],
        env={**os.environ, "VOICEMESH_REGISTRY": etcd.url, "VOICEMESH_GEOIP_DB": str(MAXMIND_TEST_DB)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        async def steered() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"voicemesh dns exited {proc.returncode}: {proc.stderr.read().decode()}")
            try:
                answer = await dig(port, f"{TOPOLOGY['mesh_name']}.{TOPOLOGY['zone']}", f"+subnet={CHANGCHUN}")
            except AssertionError:  # not listening yet: dig timed out
                return False
            return answer.answer == [f"rtc.voicemesh.test. 20 IN A {host('nrt')}"]

        await eventually(steered, "voicemesh dns to answer with the Tokyo edge")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await registry.close()


def test_the_topology_gives_the_zone_and_mesh_name():
    assert topology_defaults(str(REPO / "infra" / "topology.json")) == {"zone": "voicemesh.test",
                                                                         "mesh_name": "rtc.voicemesh.test"}


# DNS over TCP (RFC 7766) and the ACME DNS-01 CNAME.

async def tcp_connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def tcp_exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       *queries: dns.message.Message) -> list[dns.message.Message]:
    """Write every query, length-prefixed, in one segment (pipelined), then read as many responses."""
    writer.write(b"".join(len(w).to_bytes(2, "big") + w for w in (q.to_wire() for q in queries)))
    await writer.drain()
    responses = []
    for _ in queries:
        length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 10), "big")
        responses.append(dns.message.from_wire(await asyncio.wait_for(reader.readexactly(length), 10)))
    return responses


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True if the server closes the connection (EOF) with nothing sent; a generous wait otherwise."""
    try:
        return await asyncio.wait_for(reader.read(1), 10) == b""
    except (TimeoutError, ConnectionResetError):
        return False


async def test_dig_over_tcp_gets_the_udp_answers_and_pipelined_queries_are_answered_in_turn(mesh):
    server, _ = mesh
    port = server.address[1]
    answer = await dig(port, "+tcp", "rtc.voicemesh.test", "A", f"+subnet={CHANGCHUN}")
    assert (answer.status, answer.addresses, answer.client_subnet) == ("NOERROR", [host("nrt")], f"{CHANGCHUN}/24")
    assert (await dig(port, "+tcp", "nope.voicemesh.test")).status == "NXDOMAIN"
    reader, writer = await tcp_connect(port)
    queries = [dns.message.make_query(name, "A", id=n) for n, name in
               enumerate(["rtc.voicemesh.test", "ns1.voicemesh.test", "nope.voicemesh.test"], 1)]
    responses = await tcp_exchange(reader, writer, *queries)
    assert [(r.id, dns.rcode.to_text(r.rcode())) for r in responses] == [(1, "NOERROR"), (2, "NOERROR"),
                                                                        (3, "NXDOMAIN")]
    assert responses[1].answer[0][0].address == "127.0.0.1"
    writer.close()
    assert server.stats()["tcp"]["queries"] >= 5


MANY_NS = ",".join(f"ns{n}.voicemesh.test=127.0.1.{n}" for n in range(1, 41))


@pytest.mark.parametrize("mesh", [{"ns": MANY_NS}], indirect=True)
async def test_an_answer_too_big_for_udp_is_truncated_and_whole_over_tcp(mesh):
    server, _ = mesh
    port = server.address[1]
    udp = await dig(port, "+noedns", "+ignore", "voicemesh.test", "NS")  # 40 NS records do not fit 512 bytes
    assert "tc" in udp.flags and len(udp.answer) < 40
    retried = await dig(port, "+noedns", "voicemesh.test", "NS")  # dig retries over TCP on TC (RFC 7766 5)
    assert "tc" not in retried.flags and len(retried.answer) == 40
    tcp = await dig(port, "+tcp", "+noedns", "voicemesh.test", "NS")  # the truncated UDP answer is cached apart
    assert len(tcp.answer) == 40


@pytest.mark.parametrize("mesh", [{"tcp_idle_timeout_s": 0.2}], indirect=True)
async def test_an_idle_tcp_connection_is_closed(mesh):
    server, _ = mesh
    reader, writer = await tcp_connect(server.address[1])
    assert await closed_by_server(reader)
    writer.close()
    half, writer = await tcp_connect(server.address[1])
    writer.write(b"\x00\x20\x00")  # a length and one byte of the 32 announced, then nothing
    assert await closed_by_server(half)
    writer.close()
    assert server.stats()["tcp"]["closed"]["idle"] == 2


@pytest.mark.parametrize("mesh", [{"tcp_max_per_source": 2}], indirect=True)
async def test_tcp_connections_over_the_per_source_limit_are_closed_and_the_others_answered(mesh):
    server, _ = mesh
    port = server.address[1]
    held = [await tcp_connect(port) for _ in range(2)]
    await eventually(lambda: asyncio.sleep(0, server.tcp.connections == 2), "two connections accepted")
    reader, writer = await tcp_connect(port)
    assert await closed_by_server(reader)
    writer.close()
    for held_reader, held_writer in held:
        (response,) = await tcp_exchange(held_reader, held_writer, dns.message.make_query("rtc.voicemesh.test", "A"))
        assert response.rcode() == dns.rcode.NOERROR
        held_writer.close()
    assert server.stats()["tcp"]["refused"] == {"per_source": 1}


@pytest.mark.parametrize("mesh", [{"tcp_max_connections": 2}], indirect=True)
async def test_tcp_connections_over_the_total_limit_are_closed(mesh):
    server, _ = mesh
    port = server.address[1]
    held = [await tcp_connect(port) for _ in range(2)]
    await eventually(lambda: asyncio.sleep(0, server.tcp.connections == 2), "two connections accepted")
    reader, writer = await tcp_connect(port)
    assert await closed_by_server(reader)
    writer.close()
    for _, held_writer in held:
        held_writer.close()
    await eventually(lambda: asyncio.sleep(0, server.tcp.connections == 0), "the held connections to close")
    (response,) = await tcp_exchange(*await tcp_connect(port), dns.message.make_query("rtc.voicemesh.test", "A"))
    assert response.rcode() == dns.rcode.NOERROR
    assert server.stats()["tcp"]["refused"] == {"total": 1}


@pytest.mark.parametrize("mesh", [{"tcp_max_query_bytes": 512}], indirect=True)
async def test_a_tcp_query_over_the_size_limit_closes_its_connection_unanswered(mesh):
    server, _ = mesh
    port = server.address[1]
    padded = dns.message.make_query("rtc.voicemesh.test", "A", use_edns=0, pad=1024)  # valid, RFC 7830 padding
    assert len(padded.to_wire()) > 512
    reader, writer = await tcp_connect(port)
    writer.write(len(padded.to_wire()).to_bytes(2, "big") + padded.to_wire())
    assert await closed_by_server(reader)
    writer.close()
    (response,) = await tcp_exchange(*await tcp_connect(port), dns.message.make_query("rtc.voicemesh.test", "A"))
    assert response.rcode() == dns.rcode.NOERROR
    assert server.stats()["tcp"]["closed"]["oversize"] == 1


@pytest.mark.parametrize("mesh", [{"acme_challenge_zone": "acme-validation.example.net"}], indirect=True)
async def test_acme_challenge_names_are_a_cname_into_the_validation_zone(mesh):
    server, _ = mesh
    port = server.address[1]
    for transport in ("+notcp", "+tcp"):
        txt = await dig(port, transport, "_acme-challenge.rtc.voicemesh.test", "TXT")
        assert (txt.status, "aa" in txt.flags) == ("NOERROR", True)
        assert txt.answer == ["_acme-challenge.rtc.voicemesh.test. 30 IN CNAME "
                              "_acme-challenge.rtc.acme-validation.example.net."]
    apex = await dig(port, "_ACME-Challenge.voicemesh.test", "TXT")
    assert apex.answer == ["_ACME-Challenge.voicemesh.test. 30 IN CNAME _acme-challenge.acme-validation.example.net."]
    assert (await dig(port, "_acme-challenge.nope.voicemesh.test", "TXT")).status == "NXDOMAIN"


async def test_without_a_validation_zone_acme_challenge_names_do_not_exist(mesh):
    server, _ = mesh
    assert (await dig(server.address[1], "_acme-challenge.rtc.voicemesh.test", "TXT")).status == "NXDOMAIN"


def test_an_acme_validation_zone_inside_the_zone_is_refused():
    with pytest.raises(ValueError, match="acme zone inside"):
        DnsServer.from_config(config(acme_challenge_zone="acme.voicemesh.test"))
