"""The faults of issue 11, each injected into its own fresh mesh of real processes (bench/mesh) during one call
that carries speech both ways, and what each did to that call.

Every fault runs the same way: start the mesh (etcd with TLS and auth, transceiver, agents, one edge behind a
WireTap hop), place one ``voicemesh call`` through the edge speaking a looped speech clip, inject the fault
``inject_s`` after the first echo packet, let the call run to its end, then read the tap: the longest audio
gap of the echo off the wire, when the echo came back, and whether the call was kept (the caller's report is
ok and the echo reached the end of the call). Counters are the parts' ``/v1/status`` deltas over the call.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype

from bench.attack import craft
from bench.mesh import Part, PartFailed, ProcessMesh, clip_of
from bench.mesh.net import free_udp_port
from voicemesh.app.demo import bundled_speech
from voicemesh.app.lab.browser import BrowserError, browser_call
from voicemesh.registry import NodeRecord
from voicemesh.registry.base import node_key, session_prefix
from voicemesh.wire.signaling import SDP_TYPE

from .netns import BackboneNetns, NetnsError
from .tap import WireTap, echo_after, longest_gap

TAP_INSIDE = "127.11.0.1"
"""The address the edge advertises as its relay: the hop every call crosses."""
TAP_OUTSIDE = "127.11.0.2"
LEASE_TTL_S = 5.0
"""The registry's lease TTL (registry.open_registry's default; every part uses it)."""
KEPT_TAIL_S = 1.0
"""A call is kept if its echo still arrives within this many seconds of the caller's last packet."""


@dataclass
class Outcome:
    """One fault's figures: ``calls`` placed and ``kept``; the longest audio gap of the echo in ms (None: no
    echo at all); ``recovery_s`` from the faulted part being back (or, for a crash, the fault) to the echo
    resuming, or to what the fault names in ``figures``; ``counters`` explain it (relay drops, WHIP refusals,
    mux counters); ``error`` says why the fault could not run."""

    name: str
    fault: str
    calls: int = 0
    kept: int = 0
    longest_audio_gap_ms: float | None = None
    recovery_s: float | None = None
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict:
        return {"fault": self.fault, "calls": self.calls, "kept": self.kept,
                "longest_audio_gap_ms": self.longest_audio_gap_ms, "recovery_s": self.recovery_s,
                "counters": self.counters, **self.figures, "error": self.error}


def _numbers(status: dict, prefix: str = "") -> dict[str, int]:
    """The integer leaves of a status document, as dotted names."""
    found: dict[str, int] = {}
    for key, value in status.items():
        if isinstance(value, dict):
            found.update(_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, int) and not isinstance(value, bool):
            found[prefix + key] = value
    return found


IGNORED = {"flows", "flows_open", "flows_unproven", "tokens_revoked", "sessions", "whip.pending", "edge_id"}
"""Status gauges, not counters."""


def _delta(before: dict, after: dict) -> dict[str, int]:
    old, new = _numbers(before), _numbers(after)
    return {k: v - old.get(k, 0) for k, v in sorted(new.items()) if v != old.get(k, 0) and k not in IGNORED}


class FaultMesh(ProcessMesh):
    """etcd, transceiver ``trx-1`` (capacity 10) with an agent, and edge ``edge-1`` behind a WireTap, on fixed
    relay and backbone ports with SO_REUSEPORT (as deployed: a new process of it can take them over).

    ``agent``: "inproc" (the echo agent inside the transceiver), "fixed" (agent-a as its own process at a
    fixed address) or "registry" (agent-a registered; the transceiver finds agents in the registry).
    ``dns`` adds the geo DNS server. ``netns`` runs the transceiver in its own network namespace, its
    backbone on a link of its own that a fault can cut (bench/faults/netns.py); needs root.
    """

    NODES = ["edge/local/edge-1", "transceiver/local/trx-1", "transceiver/local/trx-2",
             "agent/local/agent-a", "agent/local/agent-b", "dns"]
    """The etcd users ``voicemesh registry init`` creates: every part a fault starts."""

    def __init__(self, workdir: Path, *, agent: str = "inproc", dns: bool = False, etcd_auth: bool = True,
                 netns: bool = False) -> None:
        self.netns = BackboneNetns() if netns else None
        super().__init__(workdir, self.NODES, etcd_auth=etcd_auth,
                         etcd_hosts=(self.netns.host_control,) if self.netns else ())
        self.agent_mode = agent
        self.with_dns = dns
        self.dns: Part | None = None
        self.agents: list[Part] = []
        self.transceiver: Part | None = None
        self.edge: Part | None = None
        self.tap: WireTap | None = None

    async def start(self) -> None:
        """Start every part; raises PartFailed."""
        if self.netns is not None:
            try:
                self.netns.open()
            except NetnsError as exc:
                raise PartFailed(f"cannot make the transceiver's network namespace (needs root): {exc}") from None
        await self.open()
        target = ""
        if self.agent_mode != "inproc":
            agent = await self.start_agent("agent-a", registry=self.agent_mode == "registry")
            self.agents.append(agent)
            target = "registry" if self.agent_mode == "registry" else agent.grpc
        where: dict = {}
        if self.netns is not None:
            where = dict(http_host=self.netns.inside_control, backbone_host=self.netns.inside_backbone,
                         wrap=tuple(self.netns.exec_args()), etcd_host=self.netns.host_control)
        self.transceiver = await self.start_transceiver("trx-1", capacity=10, agent=target, **where)
        relay_port, hop_port = free_udp_port(), free_udp_port(TAP_INSIDE)
        self.edge = await self.start_edge("edge-1", public=f"127.0.0.1:{relay_port}",
                                          advertise=f"{TAP_INSIDE}:{hop_port}",
                                          backbone=f"{self.netns.host_backbone if self.netns else '127.0.0.1'}:{free_udp_port()}",
                                          reuse_port=True)
        self.tap = WireTap((TAP_INSIDE, hop_port), TAP_OUTSIDE, self.edge.udp, asyncio.get_running_loop())
        if self.with_dns:
            self.dns = self.start_dns("edge-1")

    async def close(self) -> None:
        if self.tap is not None:
            self.tap.close()
        await super().close()
        if self.netns is not None:
            self.netns.close()

    async def claims(self) -> dict[str, int]:
        """The session claims of region "local" in etcd: session id -> mod revision (read as etcd root)."""
        prefix = session_prefix("local")
        return {key.removeprefix(prefix): revision for key, (_, revision) in (await self.etcd_get(prefix)).items()}

    async def _claim_values(self) -> dict[str, bytes]:
        prefix = session_prefix("local")
        return {key.removeprefix(prefix): value for key, (value, _) in (await self.etcd_get(prefix)).items()}

    async def edge_record(self) -> NodeRecord | None:
        """Edge ``edge-1``'s node record in etcd (read as etcd root), or None."""
        key = node_key("edge", "local", "edge-1")
        found = (await self.etcd_get(key, prefix=False)).get(key)
        return None if found is None else NodeRecord.from_json(found[0])

    async def claim_owners(self) -> dict[str, str]:
        """The session claims of region "local": session id -> owning node id."""
        return {sid: json.loads(value)["owner"] for sid, value in (await self._claim_values()).items()}

    async def offer_status(self) -> tuple[int, str]:
        """POST one offer (no caller behind it) to the edge: (status, Retry-After); ends the session if one
        was created."""
        assert self.edge is not None
        assert self.edge is not None and self.http is not None
        sdp, _ufrag = await craft.offer()
        try:
            async with self.http.post(f"{self.edge.http}/v1/sessions", data=sdp.encode(),
                                      headers={"Content-Type": SDP_TYPE}) as resp:
                status, retry_after, location = resp.status, resp.headers.get("Retry-After", ""), \
                    resp.headers.get("Location", "")
                await resp.read()
            if location:
                async with self.http.delete(self.edge.http + location) as resp:
                    await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, repr(exc)
        return status, retry_after


@dataclass
class Run:
    """One fault's call as it goes: ``injected`` (monotonic s) when the fault began, ``back`` when the faulted
    part was back (None: it never comes back), ``figures`` the fault's own."""

    mesh: FaultMesh
    quick: bool
    call: asyncio.Future
    injected: float = 0.0
    back: float | None = None
    figures: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    """``inject(run)`` injects the fault, sets ``run.injected`` and ``run.back``, waits for what it measures."""

    name: str
    describe: str
    inject: Callable[[Run], Awaitable[None]]
    agent: str = "inproc"
    dns: bool = False
    call_s: float = 24.0
    quick_call_s: float = 10.0
    redial: bool = False
    netns: bool = False
    page: bool = False
    """The call is the edge's call page in headless Chromium (edge/static/call.html, which re-dials by
    itself) instead of ``voicemesh call``."""


async def edge_restart(run: Run) -> None:
    """SIGKILL the edge, start a new edge process on the same ports 0.6 s later."""
    mesh = run.mesh
    assert mesh.edge is not None
    run.injected = time.monotonic()
    mesh.kill_part(mesh.edge)
    await asyncio.sleep(0.6)
    mesh.edge = mesh.respawn(mesh.edge)
    await mesh.ready(mesh.edge, f"{mesh.edge.http}/v1/status")
    run.back = time.monotonic()


async def edge_upgrade(run: Run) -> None:
    """A hitless upgrade: a second edge process of the same node takes over the same ports (SO_REUSEPORT) and
    picks the live flows up; once it serves, SIGTERM the old one, which hands over and exits. ``back`` is the
    old process's exit; ``new_up_s`` from spawning the new one until it serves, ``handover_s`` from the
    SIGTERM to the old one's exit."""
    mesh = run.mesh
    old = mesh.edge
    assert old is not None
    old_id = (await mesh.status(old)).get("edge_id")
    run.injected = time.monotonic()
    new = mesh.respawn(old)
    await _serving(new, old_id)
    serving = time.monotonic()
    old.process.send_signal(15)  # SIGTERM: drain, which hands over to the new process
    code = await asyncio.to_thread(old.process.wait, 30)
    mesh.parts.remove(old)
    mesh.edge = new
    run.back = time.monotonic()
    record = await mesh.edge_record()
    run.figures.update(new_up_s=round(serving - run.injected, 2), handover_s=round(run.back - serving, 2),
                       old_exit_code=code, old_edge_id=old_id,
                       record_after=None if record is None else {"edge_id": record.index, "draining": record.draining})


async def _serving(part: Part, old_id: object, deadline_s: float = 30.0) -> None:
    """Wait until a process other than the one with edge id ``old_id`` answers on the shared WHIP port: a new
    connection per request, since the kernel picks the listening process per connection. Raises PartFailed."""
    end = time.monotonic() + deadline_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                     timeout=aiohttp.ClientTimeout(total=1)) as http:
        while time.monotonic() < end:
            if part.process.poll() is not None:
                raise PartFailed(f"{part.name} exited with {part.process.returncode}:\n{part.tail()}")
            try:
                async with http.get(f"{part.http}/v1/status") as resp:
                    if (await resp.json(content_type=None)).get("edge_id") not in (None, old_id):
                        return
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            await asyncio.sleep(0.02)
    raise PartFailed(f"{part.name} did not serve:\n{part.tail()}")


async def etcd_freeze(run: Run) -> None:
    """SIGSTOP etcd for 3x the lease TTL. During it: an offer's status; the geo DNS answers. After it: when
    the live session is claimed again under a new revision (recovery_s)."""
    mesh = run.mesh
    assert mesh.etcd is not None and mesh.dns is not None
    dns_part = mesh.dns
    before = await mesh.claims()
    answers_before = await _dns_answers(dns_part)
    run.injected = time.monotonic()
    mesh.etcd.process.send_signal(19)  # SIGSTOP
    try:
        await asyncio.sleep(LEASE_TTL_S)
        status, retry_after = await mesh.offer_status()
        run.figures.update(offer_during_outage=status, offer_retry_after=retry_after)
        await asyncio.sleep(max(0.0, run.injected + 3 * LEASE_TTL_S - time.monotonic()))
    finally:
        mesh.etcd.process.send_signal(18)  # SIGCONT
    run.back = time.monotonic()
    empty = 0
    reclaimed_at = None
    end = run.back + 3 * LEASE_TTL_S
    while time.monotonic() < end and (reclaimed_at is None or time.monotonic() < run.back + LEASE_TTL_S):
        empty += await _dns_answers(dns_part) == 0
        if reclaimed_at is None:
            now = await mesh.claims()
            if any(revision > before.get(sid, revision) for sid, revision in now.items()):
                reclaimed_at = time.monotonic()
                run.figures["claims_after"] = len(now)
        await asyncio.sleep(0.1)
    run.figures.update(claims_before=len(before), dns_answers_before=answers_before, dns_empty_after=empty,
                       reclaimed=reclaimed_at is not None,
                       reclaim_s=None if reclaimed_at is None else round(reclaimed_at - run.back, 2))
    run.figures["recovery_from"] = "reclaim"


async def _dns_answers(part: Part) -> int:
    """The number of A records the geo DNS server answers for rtc.voicemesh.test (0 on no answer)."""
    query = dns.message.make_query("rtc.voicemesh.test", dns.rdatatype.A)
    try:
        response = await dns.asyncquery.udp(query, part.udp[0], port=part.udp[1], timeout=0.5)
    except (TimeoutError, dns.exception.DNSException, OSError):
        return 0
    return sum(len(rrset) for rrset in response.answer)


async def agent_restart(run: Run) -> None:
    """SIGKILL the agent process, start it again on the same port 1 s later; recovery from listening again."""
    mesh = run.mesh
    agent = mesh.agents[0]
    run.injected = time.monotonic()
    mesh.kill_part(agent)
    await asyncio.sleep(1.0)
    mesh.agents[0] = mesh.respawn(agent)
    run.back = await mesh.listening(mesh.agents[0])


async def agent_failover(run: Run) -> None:
    """Two agents in the registry; SIGKILL the one the transceiver uses (agent-a, the only one when the call
    began). Its record stays until its lease expires; recovery from the kill."""
    mesh = run.mesh
    spare = await mesh.start_agent("agent-b", registry=True)
    mesh.agents.append(spare)
    await asyncio.sleep(0.5)
    run.injected = time.monotonic()
    mesh.kill_part(mesh.agents[0])
    run.back = run.injected


async def transceiver_kill(run: Run) -> None:
    """A second transceiver joins; SIGKILL the one holding the call (the caller runs ``voicemesh call
    --redial``). Recovery from the kill. Figures: ``claims_gone_s`` (the dead one's claims leave etcd),
    ``edge_flows_dropped_s`` (the edge drops its flows: ``flows_transceiver_gone``), ``redial_on`` (the
    transceiver that holds the re-dialled call's claim)."""
    mesh = run.mesh
    assert mesh.transceiver is not None and mesh.edge is not None
    dead = mesh.transceiver.name
    survivor = await mesh.start_transceiver("trx-2", capacity=10)
    run.injected = time.monotonic()
    mesh.kill_part(mesh.transceiver)
    run.back = run.injected
    gone = dropped = None
    owners: set[str] = set()
    end = run.injected + LEASE_TTL_S + 10.0
    while time.monotonic() < end and (gone is None or dropped is None):
        found = await mesh.claim_owners()
        owners |= set(found.values()) - {dead}
        if gone is None and dead not in found.values():
            gone = round(time.monotonic() - run.injected, 2)
        if dropped is None and (await mesh.status(mesh.edge)).get("flows_transceiver_gone", 0) > 0:
            dropped = round(time.monotonic() - run.injected, 2)
        await asyncio.sleep(0.1)
    run.figures.update(claims_gone_s=gone, edge_flows_dropped_s=dropped, redial_on=sorted(owners),
                       survivor_sessions=(await mesh.status(survivor)).get("sessions"))


BLACKHOLE_S = 3.0
"""How long backbone_loss cuts the link between the edge and the transceiver."""


async def backbone_loss(run: Run) -> None:
    """Cut the backbone link between the edge and the transceiver (its host end down: nothing crosses either
    way; etcd and the API stay up) for BLACKHOLE_S, then heal it. Recovery from the heal."""
    netns = run.mesh.netns
    assert netns is not None
    run.injected = time.monotonic()
    netns.cut()
    try:
        await asyncio.sleep(BLACKHOLE_S)
    finally:
        netns.heal()
    run.back = time.monotonic()
    run.figures["blackhole_s"] = BLACKHOLE_S


FAULTS = {f.name: f for f in [
    Fault("edge_restart", "edge SIGKILL, new edge on the same port 0.6 s later", edge_restart),
    Fault("edge_upgrade", "hitless edge upgrade: a new process on the same ports, then SIGTERM the old",
          edge_upgrade),
    Fault("etcd_freeze", "etcd SIGSTOP for 3x the lease TTL (15 s)", etcd_freeze, dns=True, call_s=32.0,
          quick_call_s=28.0),
    Fault("agent_restart", "agent SIGKILL, restarted on the same port 1 s later", agent_restart, agent="fixed"),
    Fault("agent_failover", "agent SIGKILL, --agent registry with a second agent", agent_failover,
          agent="registry"),
    Fault("transceiver_kill", "transceiver SIGKILL (a second one is up), the caller re-dials", transceiver_kill,
          redial=True, quick_call_s=14.0),
    Fault("transceiver_kill_page", "transceiver SIGKILL (a second one is up), the call page in Chromium re-dials",
          transceiver_kill, page=True, quick_call_s=14.0),
    Fault("backbone_loss", "the backbone link between edge and transceiver cut for 3 s, then healed", backbone_loss,
          netns=True),
]}


async def _first_echo(mesh: FaultMesh, call: asyncio.Future, timeout_s: float = 20.0) -> float:
    """When the first echo packet reached the tap; raises PartFailed if the call ends or none comes."""
    assert mesh.tap is not None
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        for wire in mesh.tap.wires.values():
            if wire.down:
                return wire.down[0]
        if call.done():
            raise PartFailed(f"the call ended before any echo: {call.result().get('error')}")
        await asyncio.sleep(0.02)
    raise PartFailed("no echo within 20 s of placing the call")


async def run_fault(fault: Fault, quick: bool, workdir: Path, etcd_auth: bool = True) -> Outcome:
    """Run ``fault`` in a fresh mesh under ``workdir``; never raises for a fault that could not run."""
    outcome = Outcome(fault.name, fault.describe)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = FaultMesh(workdir, agent=fault.agent, dns=fault.dns, etcd_auth=etcd_auth, netns=fault.netns)
    call_s = fault.quick_call_s if quick else fault.call_s
    inject_s = 3.0 if quick else 6.0
    try:
        await mesh.start()
        assert mesh.edge is not None and mesh.transceiver is not None and mesh.tap is not None
        clip = clip_of(bundled_speech(), call_s, workdir, "speech.wav")
        before = {part.process.pid: await mesh.status(part) for part in (mesh.edge, mesh.transceiver)}
        call = asyncio.ensure_future(_page_call(mesh.edge, clip, call_s) if fault.page else
                                     mesh.call(mesh.edge, clip, duration_s=call_s, redial=fault.redial))
        run = Run(mesh, quick, call)
        outcome.calls = 1
        first = await _first_echo(mesh, call)
        await asyncio.sleep(max(0.0, first + inject_s - time.monotonic()))
        await fault.inject(run)
        report = await call
        for name, part in (("edge", mesh.edge), ("transceiver", mesh.transceiver)):
            if part in mesh.parts:  # a part started again counts from zero
                outcome.counters[name] = _delta(before.get(part.process.pid, {}), await mesh.status(part))
        if fault.name == "etcd_freeze":
            outcome.figures["deleted_through_edge"] = await _deleted(mesh)
        wire = mesh.tap.merged()
        gap = longest_gap(wire)
        outcome.longest_audio_gap_ms = gap.ms if gap else None
        kept = bool(report.get("ok")) and bool(wire.down) and wire.down[-1] >= wire.up[-1] - KEPT_TAIL_S
        outcome.kept = int(kept)
        resumed = echo_after(wire, run.back) if run.back is not None else None
        if run.figures.pop("recovery_from", None) == "reclaim":
            outcome.recovery_s = run.figures.get("reclaim_s")  # type: ignore[assignment]
        elif kept and resumed is not None and run.back is not None:
            resumed_after_gap = gap.end if gap and gap.end >= run.back else resumed
            outcome.recovery_s = round(resumed_after_gap - run.back, 3)
        outcome.figures.update(run.figures, call_ok=bool(report.get("ok")), call_error=report.get("error"),
                               redials=[{k: r.get(k) for k in ("reason", "resumed_ms")} for r in report.get("redials", [])],
                               audio_rtt_ms=report.get("audio_rtt_ms"), correlation=report.get("correlation"),
                               gap_at_s=round(gap.start - run.injected, 2) if gap else None)
    except (PartFailed, RuntimeError, OSError) as exc:
        outcome.error = str(exc)
    finally:
        await mesh.close()
        mesh.cleanup()
    return outcome


async def _page_call(edge: Part, clip: str, call_s: float) -> dict:
    """The edge's call page in headless Chromium for ``call_s``: its ``window.result``, or ``ok`` False with why."""
    try:
        return await browser_call(f"{edge.http}/", clip, seconds=call_s)
    except (BrowserError, OSError) as exc:
        return {"ok": False, "error": f"Chromium: {exc}"}


async def _deleted(mesh: FaultMesh) -> bool:
    """Whether the caller's DELETE through the edge (at the end of its call) ended the session: the
    transceiver holds no session within 2 s of the call's end."""
    assert mesh.transceiver is not None
    for _ in range(20):
        if (await mesh.status(mesh.transceiver)).get("sessions") == 0:
            return True
        await asyncio.sleep(0.1)
    return False


def to_json(outcomes: list[Outcome], quick: bool) -> str:
    """The last line: one entry per fault."""
    return json.dumps({"quick": quick, "faults": {o.name: o.to_dict() for o in outcomes}})
