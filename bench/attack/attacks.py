"""The attacks of issue 9, each against the running mesh, each returning a Result.

Every attack measures what it sent, what reached the target or the attacker, whether a legitimate
call placed during it succeeded (when that is the question), and the drop counters the parts report
(deltas of the edge relay's ``drops`` and the transceiver mux's counters over the attack).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from bench.mesh.net import Crowd, Endpoint
from voicemesh.wire.hopauth import SIGNATURE, HopRequest, HopSigner
from voicemesh.wire.meshkeys import MeshKeys
from voicemesh.wire.signaling import CLIENT_ADDRESS, EDGE_ID, RELAY_ADDRESS, TRICKLE_TYPE

from . import craft
from .mesh import Mesh, Part


@dataclass
class Result:
    """One attack's figures. ``sent``/``reached`` are packets (datagrams, or HTTP requests and connections)
    and bytes; ``figures`` holds what is specific to the attack; ``error`` says why it could not run."""

    name: str
    rule: str
    sent_packets: int = 0
    sent_bytes: int = 0
    reached_packets: int = 0
    reached_bytes: int = 0
    legit_call_ok: bool | None = None
    drops: dict[str, dict[str, int]] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict:
        return {"rule": self.rule, "sent": {"packets": self.sent_packets, "bytes": self.sent_bytes},
                "reached": {"packets": self.reached_packets, "bytes": self.reached_bytes},
                "legit_call_ok": self.legit_call_ok, "drops": self.drops, **self.figures, "error": self.error}


TRAFFIC = {"rx", "tx"}
"""Mux counters that count traffic, not drops."""


def _delta(before: dict, after: dict) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in sorted(after.items())
            if isinstance(v, int) and v != before.get(k, 0) and k not in TRAFFIC}


class Counters:
    """Snapshots of the relay drops of ``edge`` and the mux counters of the main transceiver."""

    def __init__(self, mesh: Mesh, edge: Part) -> None:
        self.mesh, self.edge = mesh, edge
        self.before: tuple[dict, dict] = ({}, {})

    async def _take(self) -> tuple[dict, dict]:
        assert self.mesh.transceiver is not None
        edge, trx = await asyncio.gather(self.mesh.status(self.edge), self.mesh.status(self.mesh.transceiver))
        return edge.get("drops", {}), trx.get("mux", {})

    async def start(self) -> None:
        self.before = await self._take()

    async def edge_status(self) -> dict:
        return await self.mesh.status(self.edge)

    async def drops(self) -> dict[str, dict[str, int]]:
        relay, mux = await self._take()
        return {"relay": _delta(self.before[0], relay), "mux": _delta(self.before[1], mux)}


def _call_ok(report: dict) -> bool:
    return bool(report.get("ok"))


async def _answered_session(mesh: Mesh, edge: Part, source: str) -> tuple[str, str, str, str]:
    """A session of the attacker's own through ``edge`` (a WHIP POST from ``source``):
    (server ufrag = the routing token, server pwd, the attacker's client ufrag, Location). Raises RuntimeError."""
    sdp, client_ufrag = await craft.offer()
    status, body, location = await mesh.whip_post(f"{edge.http}/v1/sessions", sdp, source)
    if status != 201:
        raise RuntimeError(f"the attacker's own offer got {status}: {body[:200]}")
    server_ufrag, server_pwd = craft.ice_credentials(body)
    return server_ufrag, server_pwd, client_ufrag, location


async def _until(condition, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.05)
    return True


async def replay_hijack(mesh: Mesh, quick: bool) -> Result:
    """(a) An on-path observer copies one of a caller's STUN checks off the path and replays it from its own
    address to the edge relay; then, each time it sees the caller send media, it sends one junk datagram
    right behind it (the mux moves a session's media to the route its last non-STUN datagram came on).
    Counts the caller's downlink DTLS/SRTP (first byte >= 20) arriving at the attacker: ``hijacked_packets``."""
    result = Result("replay_hijack", "a route becomes active only after a check the transceiver sent over it "
                                     "is answered; replayed checks are ignored (core/mux.py)")
    assert mesh.edge is not None and mesh.onpath is not None
    counters = Counters(mesh, mesh.edge)
    await counters.start()
    onpath = mesh.onpath
    onpath.checks.clear()
    onpath.media_up = 0
    call = asyncio.ensure_future(mesh.call(mesh.edge))
    attacker = Endpoint("127.11.0.1", asyncio.get_running_loop())
    relay = mesh.edge.udp
    try:
        await _until(lambda: onpath.media_up >= 25 or call.done(), 20)
        if onpath.checks:
            attacker.send(onpath.checks[-1], relay)
            onpath.on_media_up = lambda: attacker.send(craft.JUNK, relay)
        report = await call
        onpath.on_media_up = None
        await asyncio.sleep(0.5)
    finally:
        onpath.on_media_up = None
        attacker.close()
    result.legit_call_ok = _call_ok(report)
    result.sent_packets, result.sent_bytes = attacker.sent_packets, attacker.sent_bytes
    result.reached_packets, result.reached_bytes = attacker.rx_packets, attacker.rx_bytes
    result.figures = {"checks_seen_on_path": len(onpath.checks), "hijacked_packets": attacker.rx_media,
                      "stun_to_attacker": attacker.rx_stun,
                      "caller_packets_received": report.get("packets_received"),
                      "legit_call_error": report.get("error")}
    result.drops = await counters.drops()
    return result


async def reflection(mesh: Mesh, quick: bool) -> Result:
    """(b) A caller with its own session (so its token and pwd) sends one correctly signed check "from" each of
    many victim addresses, right after the answer. Counts the bytes reaching the victims within a few seconds:
    ``amplification`` = bytes to all victims / bytes sent from them; ``amplification_per_victim_max`` the
    largest such ratio of one victim address (what the rule bounds: no address that has not proved itself
    gets more bytes than it sent)."""
    result = Result("reflection", "no more bytes towards an unproven address than received from it "
                                  "(edge relay amplification budget)")
    assert mesh.edge is not None
    counters = Counters(mesh, mesh.edge)
    await counters.start()
    server_ufrag, server_pwd, client_ufrag, location = await _answered_session(mesh, mesh.edge, "127.30.0.1")
    victims = Crowd("127.20.0.0/16", 20 if quick else 100, asyncio.get_running_loop())
    try:
        for victim in victims.members:
            victim.send(craft.binding_request(server_ufrag, client_ufrag, server_pwd.encode()), mesh.edge.udp)
        await asyncio.sleep(3.0 if quick else 4.0)
    finally:
        victims.close()
        await mesh.delete(mesh.edge.http, location)
    result.sent_packets, result.sent_bytes = victims.total("sent_packets"), victims.total("sent_bytes")
    result.reached_packets, result.reached_bytes = victims.total("rx_packets"), victims.total("rx_bytes")
    per_victim = max(v.rx_bytes / v.sent_bytes for v in victims.members if v.sent_bytes)
    result.figures = {"victims": len(victims.members),
                      "amplification": round(result.reached_bytes / max(1, result.sent_bytes), 3),
                      "amplification_per_victim_max": round(per_victim, 3)}
    result.drops = await counters.drops()
    return result


async def token_flood(mesh: Mesh, quick: bool) -> Result:
    """(c) One token (the attacker's own session's) in a check with a forged MESSAGE-INTEGRITY, sent from 1,200
    source addresses to an edge holding at most 1,000 flows, and again every second while a legitimate call
    is placed through that edge. ``flows_held``: the edge's flows after the first round (the flood's own)."""
    result = Result("token_flood", "flows per token capped, unproven ones evicted first; a token opens full "
                                   "flows only in a window after the answer (edge relay)")
    max_flows, sources = 1000, 1200
    edge = await mesh.start_edge("edge-flood", max_flows=max_flows)
    counters = Counters(mesh, edge)
    crowd = None
    try:
        await counters.start()
        server_ufrag, _pwd, client_ufrag, location = await _answered_session(mesh, edge, "127.31.0.1")
        request = craft.binding_request(server_ufrag, client_ufrag, os.urandom(16))
        crowd = Crowd("127.21.0.0/16", sources, asyncio.get_running_loop())

        async def flood_round() -> None:
            for i, member in enumerate(crowd.members):
                member.send(request, edge.udp)
                if i % 100 == 99:
                    await asyncio.sleep(0.005)

        await flood_round()
        await asyncio.sleep(0.5)
        flows_held = (await counters.edge_status()).get("flows")
        call = asyncio.ensure_future(mesh.call(edge))
        while not call.done():
            await flood_round()
            await asyncio.sleep(1.0)
        report = await call
        await mesh.delete(edge.http, location)
        result.legit_call_ok = _call_ok(report)
        result.sent_packets, result.sent_bytes = crowd.total("sent_packets"), crowd.total("sent_bytes")
        result.reached_packets, result.reached_bytes = crowd.total("rx_packets"), crowd.total("rx_bytes")
        result.drops = await counters.drops()
        result.figures = {"sources": sources, "max_flows": max_flows, "flows_held": flows_held,
                          "table_full": result.drops["relay"].get("table_full", 0),
                          "legit_call_error": report.get("error")}
    finally:
        if crowd is not None:
            crowd.close()
        mesh.stop_part(edge)
    return result


async def admission(mesh: Mesh, quick: bool) -> Result:
    """(d) 10 concurrent offers straight to a transceiver with capacity 2 (as edges forward them, signed with
    the mesh key). ``over_admitted`` = accepted - capacity."""
    result = Result("admission", "capacity checked and taken atomically (transceiver)")
    capacity, offers = 2, 10
    trx = await mesh.start_transceiver("trx-adm", capacity=capacity, region="adm", region_id=2, lat=60, lon=60)
    try:
        sdp, _ = await craft.offer()
        signer = HopSigner(MeshKeys.from_spec(mesh.env["VOICEMESH_TOKEN_KEYS"]))

        def signed(n: int) -> dict[str, str]:
            headers = {EDGE_ID: "1", RELAY_ADDRESS: "127.0.0.1:9", CLIENT_ADDRESS: f"127.32.0.{n + 1}"}
            request = HopRequest.from_headers("POST", "/v1/sessions", trx.name, sdp.encode(), headers)
            return headers | {SIGNATURE: signer.sign(request, time.time())}

        answers = await asyncio.gather(*(mesh.whip_post(f"{trx.http}/v1/sessions", sdp, "127.32.0.1", signed(n))
                                         for n in range(offers)))
        statuses = Counter(status for status, _, _ in answers)
        accepted = [a for a in answers if a[0] == 201]
        for _, _, location in accepted:
            await mesh.delete(trx.http, location)
    finally:
        mesh.stop_part(trx)
    result.sent_packets, result.sent_bytes = offers, offers * len(sdp)
    result.reached_packets, result.reached_bytes = len(accepted), sum(len(a[1]) for a in accepted)
    result.figures = {"offers": offers, "capacity": capacity, "accepted": len(accepted),
                      "statuses": {str(k): v for k, v in sorted(statuses.items())},
                      "over_admitted": max(0, len(accepted) - capacity)}
    return result


async def whip_flood(mesh: Mesh, quick: bool) -> Result:
    """(e) Valid offers from one source at 40 per second for a few seconds (each answered one holds a session
    until its connect timeout); a legitimate caller from another address calls during the flood."""
    result = Result("whip_flood", "per-source WHIP rate limit (429) and pending-offer cap (edge)")
    assert mesh.edge is not None
    counters = Counters(mesh, mesh.edge)
    await counters.start()
    sdp, _ = await craft.offer()
    url = f"{mesh.edge.http}/v1/sessions"
    rate, duration_s = 40, (3.0 if quick else 8.0)
    statuses: Counter[int] = Counter()
    locations: list[str] = []
    answered_bytes = 0

    async def one() -> None:
        nonlocal answered_bytes
        status, body, location = await mesh.whip_post(url, sdp, "127.40.0.1")
        statuses[status] += 1
        if location:
            locations.append(location)
            answered_bytes += len(body)

    call = asyncio.ensure_future(mesh.call(mesh.edge, delay_s=1.0))
    requests = []
    start = time.monotonic()
    while time.monotonic() - start < duration_s:
        requests.append(asyncio.ensure_future(one()))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*requests)
    report = await call
    for location in locations:
        await mesh.delete(mesh.edge.http, location)
    result.legit_call_ok = _call_ok(report)
    result.sent_packets, result.sent_bytes = len(requests), len(requests) * len(sdp)
    result.reached_packets, result.reached_bytes = statuses[201], answered_bytes
    result.drops = await counters.drops()
    result.figures = {"requests": len(requests), "accepted": statuses[201], "rate_limited_429": statuses[429],
                      "statuses": {str(k): v for k, v in sorted(statuses.items())},
                      "legit_call_error": report.get("error")}
    return result


async def patch_flood(mesh: Mesh, quick: bool) -> Result:
    """(j) PATCH flood (anyone holding a session, or guessing ids): from one address, 300 PATCHes of the
    attacker's own session as fast as they go (half ICE restarts, ``If-Match: *``, each of which would mint a
    routing token and re-key the session at its transceiver; half trickle), then 200 PATCHes of made-up
    session ids from another address; a legitimate caller calls during the flood. ``forwarded`` counts the
    PATCHes the edge passed on to the transceiver (any answer but the edge's own ``429`` and ``404``)."""
    result = Result("patch_flood", "per-source limit on PATCH, DELETE and OPTIONS; per-session bounds on "
                                   "PATCHes and ICE restarts; session ids checked by MAC before any look-up (edge)")
    assert mesh.edge is not None
    counters = Counters(mesh, mesh.edge)
    await counters.start()
    *_, location = await _answered_session(mesh, mesh.edge, "127.44.0.1")
    own, statuses = mesh.edge.http + location, {"own": Counter[int](), "made_up": Counter[int]()}

    async def flood(source: str, urls: list[str], restart: list[bool], kind: str) -> None:
        connector = aiohttp.TCPConnector(local_addr=(source, 0), limit=16)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20)) as http:
            async def one(url: str, is_restart: bool) -> None:
                headers = {"Content-Type": TRICKLE_TYPE, **({"If-Match": "*"} if is_restart else {})}
                try:
                    async with http.patch(url, data=craft.ice_fragment(), headers=headers) as resp:
                        await resp.read()
                        statuses[kind][resp.status] += 1
                except (aiohttp.ClientError, TimeoutError):
                    statuses[kind][0] += 1
            await asyncio.gather(*(one(url, r) for url, r in zip(urls, restart, strict=True)))

    call = asyncio.ensure_future(mesh.call(mesh.edge, delay_s=0.5))
    own_n, made_up_n = 300, 200
    await flood("127.44.0.1", [own] * own_n, [i % 2 == 0 for i in range(own_n)], "own")
    made_up = [f"{mesh.edge.http}/v1/sessions/{craft.made_up_session_id()}" for _ in range(made_up_n)]
    await flood("127.44.0.2", made_up, [True] * made_up_n, "made_up")
    report = await call
    await mesh.delete(mesh.edge.http, location)
    result.legit_call_ok = _call_ok(report)
    result.sent_packets = own_n + made_up_n
    edge_answers = {429, 404}
    forwarded = {kind: sum(n for status, n in counts.items() if status not in edge_answers and status)
                 for kind, counts in statuses.items()}
    result.reached_packets = sum(forwarded.values())
    result.drops = await counters.drops()
    result.figures = {"requests": own_n + made_up_n, "forwarded_own": forwarded["own"],
                      "forwarded_made_up": forwarded["made_up"],
                      "rate_limited_429": statuses["own"][429] + statuses["made_up"][429],
                      "statuses": {kind: {str(k): v for k, v in sorted(c.items())} for kind, c in statuses.items()},
                      "legit_call_error": report.get("error")}
    return result


def _still_open(sock: socket.socket) -> bool:
    """Whether the server has not closed this connection (whatever it wrote is read and dropped)."""
    try:
        while True:
            data = sock.recv(65536, socket.MSG_DONTWAIT)
            if not data:
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False


async def slowloris(mesh: Mesh, quick: bool) -> Result:
    """(f) Hundreds of slow connections to the WHIP front from 10 addresses: half send a request head one
    header line every 2 s, half send a whole head with ``Content-Length: 4000`` and then one body byte every
    2 s. A legitimate call is placed meanwhile. ``still_open``: connections the server had not closed after
    ``wait_s`` seconds."""
    result = Result("slowloris", "header and body read timeouts, a connection cap, keep-alive limits "
                                 "(every HTTP server)")
    assert mesh.edge is not None
    count, wait_s = (100, 12.0) if quick else (300, 20.0)
    host, port = mesh.edge.http.removeprefix("http://").rsplit(":", 1)
    conns: list[tuple[socket.socket, bool]] = []
    sent_bytes = 0
    for i in range(count):
        sock = socket.socket()
        sock.bind((f"127.41.0.{i % 10 + 1}", 0))
        try:
            sock.connect((host, int(port)))
        except OSError:
            sock.close()
            continue
        stall_body = i % 2 == 1
        head = f"POST /v1/sessions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/sdp\r\n"
        if stall_body:
            head += "Content-Length: 4000\r\n\r\nv=0\r\n"
        try:
            sent_bytes += sock.send(head.encode())
        except OSError:
            pass
        sock.setblocking(False)
        conns.append((sock, stall_body))
    call = asyncio.ensure_future(mesh.call(mesh.edge, delay_s=0.5))
    start = time.monotonic()
    while time.monotonic() - start < wait_s:
        await asyncio.sleep(2.0)
        for sock, stall_body in conns:
            try:
                sent_bytes += sock.send(b"a" if stall_body else b"X-Slow: 1\r\n")
            except OSError:
                pass
    still_open = [sock for sock, _ in conns if _still_open(sock)]
    report = await call
    for sock, _ in conns:
        sock.close()
    result.legit_call_ok = _call_ok(report)
    result.sent_packets, result.sent_bytes = count, sent_bytes
    result.reached_packets = len(still_open)
    result.figures = {"connections": count, "connected": len(conns), "wait_s": wait_s,
                      "still_open": len(still_open), "legit_call_error": report.get("error")}
    return result


async def oversized_sdp(mesh: Mesh, quick: bool) -> Result:
    """(g) One offer with 180 BUNDLEd audio m-lines through the WHIP front: the status it gets."""
    result = Result("oversized_sdp", "SDP limits: m-lines, lines, attributes (400)")
    assert mesh.edge is not None
    base, _ = await craft.offer()
    sdp = craft.oversized_offer(base, 180)
    status, body, location = await mesh.whip_post(f"{mesh.edge.http}/v1/sessions", sdp, "127.42.0.1")
    if location:
        await mesh.delete(mesh.edge.http, location)
    result.sent_packets, result.sent_bytes = 1, len(sdp)
    result.reached_packets, result.reached_bytes = int(status == 201), len(body) if status == 201 else 0
    result.figures = {"m_lines": 180, "status": status,
                      "answer_m_lines": body.count("\nm=") if status == 201 else 0}
    return result


async def dns_amplification(mesh: Mesh, quick: bool) -> Result:
    """(h) ANY, SOA and NXDOMAIN queries "from" 16 addresses of one victim
    /24 at about 1,000 per second. ``amplification`` = bytes reaching the victims / bytes sent;
    ``answer_ratio`` the same for a single query of each kind from a quiet address, before the flood;
    ``legit_answered`` whether a resolver in another /24 still got its answer during the flood."""
    result = Result("dns_amplification", "response rate limiting per client prefix, slipping truncated "
                                          "answers (geo DNS)")
    assert mesh.edge is not None
    dns = mesh.start_dns("edge-main")
    loop = asyncio.get_running_loop()
    probe = Endpoint("127.67.0.1", loop)
    victims = Crowd("127.66.0.0/24", 16, loop)
    try:
        ready = False
        for _ in range(100):
            probe.send(craft.dns_query("rtc.voicemesh.test"), dns.udp)
            if await _until(lambda: probe.rx_packets > 0, 0.2):
                ready = True
                break
            if dns.process.poll() is not None:
                break
        if not ready:
            raise RuntimeError(f"the DNS server does not answer:\n{dns.tail()}")
        quiet = Endpoint("127.68.0.1", loop)
        for query in craft.dns_queries("voicemesh.test"):
            quiet.send(query, dns.udp)
        await _until(lambda: quiet.rx_packets >= 3, 2.0)
        answer_ratio = round(quiet.rx_bytes / max(1, quiet.sent_bytes), 3)
        quiet.close()
        total = 1500 if quick else 6000
        probe_before = probe.rx_packets
        for i in range(total // 3):
            for j, query in enumerate(craft.dns_queries("voicemesh.test")):
                victims.members[(3 * i + j) % len(victims.members)].send(query, dns.udp)
            if i % 16 == 15:
                await asyncio.sleep(0.05)
            if i == total // 6:
                probe.send(craft.dns_query("rtc.voicemesh.test"), dns.udp)
        await asyncio.sleep(1.0)
        legit_answered = probe.rx_packets > probe_before
    finally:
        victims.close()
        probe.close()
        mesh.stop_part(dns)
    result.sent_packets, result.sent_bytes = victims.total("sent_packets"), victims.total("sent_bytes")
    result.reached_packets, result.reached_bytes = victims.total("rx_packets"), victims.total("rx_bytes")
    result.figures = {"queries": result.sent_packets, "answer_ratio": answer_ratio,
                      "amplification": round(result.reached_bytes / max(1, result.sent_bytes), 3),
                      "legit_answered": legit_answered}
    return result


async def compromised_edge(mesh: Mesh, quick: bool) -> Result:
    """(i) With the main edge's etcd credentials (its client certificate, as taken from a compromised edge
    host), write straight to etcd: register a transceiver, an agent and another edge, and overwrite the claim
    of a live session. Each write is attached to a lease the attacker revokes at the end, so what got in
    leaves again. ``writes_accepted`` counts the writes etcd took (goal 0)."""
    from etcd3aio import EtcdError

    from voicemesh.registry import NodeRecord, RegistryTls, session_key
    from voicemesh.registry.etcd import connect_client

    result = Result("compromised_edge", "a user per node whose role writes only its own keys (etcd TLS, "
                                        "client certificates, auth: registry/access.py)")
    assert mesh.edge is not None and mesh.transceiver is not None
    creds = mesh.credentials("edge/local/edge-main")
    tls = None
    if creds:
        tls = RegistryTls.from_files(mesh.env["VOICEMESH_REGISTRY_CA"], creds["VOICEMESH_REGISTRY_CERT"],
                                     creds["VOICEMESH_REGISTRY_KEY"])
    _ufrag, _pwd, _client_ufrag, location = await _answered_session(mesh, mesh.edge, "127.43.0.1")
    rogue = {"register_transceiver": NodeRecord("transceiver", "local", "trx-rogue", index=9, region_id=1,
                                                http="http://127.43.0.2:8081", backbone="127.43.0.2:7000",
                                                capacity=1000),
             "register_agent": NodeRecord("agent", "local", "agent-rogue", grpc="127.43.0.2:50051"),
             "register_edge": NodeRecord("edge", "local", "edge-rogue", http="http://127.43.0.2:8080",
                                         public_relay="127.43.0.2:3478")}
    writes = {name: (node.key, node.to_json()) for name, node in rogue.items()}
    writes["overwrite_session_claim"] = (session_key("local", location.rsplit("/", 1)[-1]),
                                         b'{"owner":"trx-rogue","region":"local","claim":"0"}')
    outcomes: dict[str, str] = {}
    claim_found = False
    client = connect_client([mesh.etcd_url.removeprefix("etcd://")], tls)
    await client.connect()
    try:
        assert client.kv is not None and client.lease is not None
        claim_key = writes["overwrite_session_claim"][0]
        claim_found = bool((await client.kv.get(claim_key, timeout=5)).kvs)  # edges may read claims (DELETE)
        lease = (await client.lease.grant(30, timeout=5)).ID
        for name, (key, value) in writes.items():
            try:
                await client.kv.put(key, value, lease=lease, timeout=5)
                outcomes[name] = "accepted"
            except EtcdError as exc:
                outcomes[name] = f"refused: {exc}"
        await client.lease.revoke(lease, timeout=5)
    finally:
        await client.close()
        await mesh.delete(mesh.transceiver.http, location)
    accepted = sum(outcome == "accepted" for outcome in outcomes.values())
    result.sent_packets = len(writes)
    result.sent_bytes = sum(len(key) + len(value) for key, value in writes.values())
    result.reached_packets = accepted
    result.figures = {"etcd_auth": mesh.etcd_auth, "session_claim_found": claim_found, "writes": outcomes,
                      "writes_accepted": accepted}
    return result


async def baseline(mesh: Mesh, quick: bool) -> Result:
    """A legitimate call with no attack: the harness and the mesh work."""
    result = Result("baseline", "a legitimate call, no attack")
    assert mesh.edge is not None
    report = await mesh.call(mesh.edge)
    result.legit_call_ok = _call_ok(report)
    result.figures = {"packets_received": report.get("packets_received"), "call_error": report.get("error")}
    return result


ATTACKS = {
    "baseline": baseline,
    "replay_hijack": replay_hijack,
    "reflection": reflection,
    "token_flood": token_flood,
    "admission": admission,
    "whip_flood": whip_flood,
    "patch_flood": patch_flood,
    "slowloris": slowloris,
    "oversized_sdp": oversized_sdp,
    "dns_amplification": dns_amplification,
    "compromised_edge": compromised_edge,
}
"""Every attack by name, in the order ``make attack`` runs them."""
