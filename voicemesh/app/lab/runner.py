"""Builds the lab on this machine, runs etcd, the geo DNS server, the edges and the transceivers in it,
places calls from the client cities, and tears it all down, also after a failure.

Every part runs as its own process inside its node's namespace (``ip netns exec``): ``voicemesh dns`` in
"ctl"; per core region its own etcd (that region's node records and session claims, registry/regions.py)
and one ``voicemesh transceiver`` with a built-in agent in process (echo, or ``agent_kind``); one
``voicemesh edge`` per PoP, whose home registry is its region's. Every part reads every region's etcd.
The lab process itself holds the TUN links and runs the WAN between them (voicemesh/app/lab/wan.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from voicemesh.app.demo import bundled_speech
from voicemesh.app.lab import netns, report
from voicemesh.app.lab.plan import PREFIX, WHIP_HTTP_PORT, City, LabError, Node, Plan
from voicemesh.app.lab.wan import TunWan, Wan

START_TIMEOUT_S = 90.0
"""How long a part may take to come up (Python start-up of a dozen processes on two cores, included)."""
STOP_TIMEOUT_S = 10.0
CALL_SLACK_S = 60.0
"""A call may take this much longer than its audio before it is abandoned (setup over slow paths, start-up)."""
ETCD_READY = ("ready to serve client requests", "serving client traffic")
"""etcd 3.4/3.5 log lines that mean the client port is being served."""


class Lab:
    """The running lab of ``plan``; use as ``async with Lab(plan) as lab:``. ``progress`` is told of each
    phase of the build; ``agent_kind`` is the transceivers' in-process agent (voicemesh/app/agents.py).

    ``start()`` raises LabError ("not_root", "no_iproute2", "lab_exists", "ip_failed", "start_failed")
    after tearing down what it built; ``close()`` tears everything down and is safe to call twice.
    """

    def __init__(self, plan: Plan, progress: Callable[[str], None] = lambda line: None, *,
                 agent_kind: str = "echo") -> None:
        self.plan = plan
        self.agent_kind = agent_kind
        self.progress = progress
        self.workdir: Path | None = None
        self.wan: TunWan | None = None
        self._fds: dict[str, int] = {}
        self._parts: list[tuple[str, asyncio.subprocess.Process, Path]] = []
        self._region_parts: dict[str, list[tuple[str, asyncio.subprocess.Process, Path]]] = {}
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "VOICEMESH_"))}
        api_key = secrets.token_urlsafe(32)
        self.env = inherited | {
            "VOICEMESH_TOKEN_KEYS": f"1:{secrets.token_hex(32)}",
            "VOICEMESH_API_KEYS": f"lab:{api_key}",  # the edges' (they serve WHIP off loopback: auth is required)
            "VOICEMESH_CALL_TOKEN": api_key,  # `voicemesh call`, a server-side caller: the API key is its bearer
            "VOICEMESH_APP_API_KEY": api_key,  # the browser call gets a client token with it, as an app's backend
            "VOICEMESH_REGISTRY": plan.registry_url(plan.ports["etcd_client"]),
            "VOICEMESH_LOG_LEVEL": "info",
            "VOICEMESH_LOG_FORMAT": "json",
        }

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> None:
        netns.check_host()
        existing = netns.namespaces()
        if existing:
            raise LabError("lab_exists", f"lab namespaces exist already ({', '.join(existing)}): "
                                         "another lab is running, or run `voicemesh lab down`")
        shm = Path("/dev/shm")
        self.workdir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=shm if shm.is_dir() else None))
        try:
            await self._build(self.workdir)
        except BaseException:
            await self.close()
            raise

    async def _build(self, workdir: Path) -> None:
        plan = self.plan
        ctl = plan.node("ctl")
        for node in plan.nodes:
            self._fds[node.name] = netns.add_node(node, str(ctl.address))
        self.wan = TunWan(Wan(plan, random.Random()), self._fds)
        self.wan.start()
        geoip = workdir / "cities.mmdb"
        write_geoip(plan, geoip)

        ports = plan.ports
        self.progress(f"{len(plan.nodes)} namespaces linked; starting an etcd per region "
                      f"({', '.join(r.name for r in plan.regions)})")
        etcds = {}
        for r in plan.regions:
            core = plan.region_node(r)
            client = f"http://{core.address}:{ports['etcd_client']}"
            peer = f"http://127.0.0.1:{ports['etcd_peer']}"
            etcds[r.name] = await self._spawn(core, "etcd", [
                "etcd", "--name", r.name, "--data-dir", str(workdir / f"etcd-{r.name}"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"{r.name}={peer}", "--logger", "zap", "--log-level", "info"])
        for part in etcds.values():
            await self._wait(part, lambda line: any(text in line.get("msg", "") for text in ETCD_READY))

        self.progress("starting the transceivers and the geo DNS server")
        trxs = [await self._spawn(plan.region_node(r), "transceiver", self._voicemesh(
            "transceiver", "--node-id", f"trx-{r.name}", "--region", r.name, "--region-id", str(r.region_id),
            "--registry-home", r.name,
            "--backbone", f"{plan.region_node(r).address}:{ports['backbone_udp']}",
            "--http", f"{plan.region_node(r).address}:{ports['transceiver_http']}", "--agent", "",
            "--agent-kind", self.agent_kind,
            "--lat", str(plan.region_node(r).lat), "--lon", str(plan.region_node(r).lon))) for r in plan.regions]
        for r, part in zip(plan.regions, trxs, strict=True):
            self._region_parts[r.name] = [part, etcds[r.name]]
        dns = await self._spawn(ctl, "dns", self._voicemesh(
            "dns", "--zone", plan.zone, "--mesh-name", plan.mesh_name, "--bind", f"{ctl.address}:{ports['dns']}",
            "--geoip-db", str(geoip), "--default-edge", plan.central_edge))
        for part in trxs:
            await self._wait(part, lambda line: line.get("msg") == "transceiver up")
        await self._wait(dns, lambda line: line.get("msg") == "dns up")

        self.progress(f"starting {len(plan.edges)} edges")
        edges = []
        for edge in plan.edges:
            node = plan.node(edge)
            edges.append(await self._spawn(node, "edge", self._voicemesh(
                "edge", "--node-id", edge, "--region", node.site, "--public", f"{node.address}:{ports['relay_udp']}",
                "--http", f"{node.address}:{WHIP_HTTP_PORT}", "--backbone", f"{node.address}:0",
                "--lat", str(node.lat), "--lon", str(node.lon), "--registry-home", plan.region_for_edge(edge).name,
                "--region-rtt-ms", plan.region_rtts(edge))))
        for part in edges:
            await self._wait(part, lambda line: line.get("msg") == "edge up")
        known: set[str] = set()

        def all_edges_known(line: dict) -> bool:
            if line.get("msg") == "edges changed":
                known.clear()
                known.update(line.get("edges", []))
            return known == set(plan.edges)

        await self._wait(dns, all_edges_known)

    def _voicemesh(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "voicemesh", *args]

    async def _spawn(self, node: Node, part: str, argv: list[str]) -> tuple[str, asyncio.subprocess.Process, Path]:
        assert self.workdir is not None, "start() first"
        log = self.workdir / f"{node.name}.{part}.log"
        with open(log, "wb") as fh:
            proc = await asyncio.create_subprocess_exec(*netns.exec_args(node, *argv), stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.DEVNULL, stderr=fh, env=self.env)
        entry = (f"{part} in {node.namespace}", proc, log)
        self._parts.append(entry)
        return entry

    async def _wait(self, part: tuple[str, asyncio.subprocess.Process, Path], ready: Callable[[dict], bool]) -> None:
        """Wait until a JSON line of the part's log satisfies ``ready``; raises LabError("start_failed")."""
        name, proc, log = part
        seen = 0
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while True:
            lines = log.read_text(errors="replace").splitlines()
            for text in lines[seen:]:
                if text.startswith("{"):
                    try:
                        line = json.loads(text)
                    except ValueError:
                        continue
                    if isinstance(line, dict) and ready(line):
                        return
            seen = len(lines)
            if proc.returncode is not None or asyncio.get_running_loop().time() > deadline:
                state = f"exited with {proc.returncode}" if proc.returncode is not None else "did not come up"
                raise LabError("start_failed", f"{name} {state}; its log ends:\n" + "\n".join(lines[-15:]))
            await asyncio.sleep(0.1)

    async def fail_region(self, region: str) -> None:
        """Kill (SIGKILL: a crash) the transceiver and the etcd of core region ``region``."""
        for _, proc, _ in self._region_parts.get(region, []):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    def answer_hops(self, session_id: str) -> dict:
        """Where session ``session_id``'s WHIP answer came from and how long its parts took, from the parts'
        log lines: ``region``, the core region whose transceiver took it (transceivers are named
        ``trx-<region>``), from the edge's "session forwarded" line with its ``whip_ms``, ``forward_ms`` and
        ``new_connection`` (edge/whip.py), and the transceiver's ``answer_ms`` and ``claim_ms`` from its
        "session answered" line (core/transceiver.py). Empty if no edge logged the session."""
        hops: dict = {}
        if not session_id:
            return hops
        for _, _, log in self._parts:
            if ".edge." not in log.name and ".transceiver." not in log.name:
                continue
            for text in log.read_text(errors="replace").splitlines():
                if session_id not in text or not text.startswith("{"):
                    continue
                try:
                    line = json.loads(text)
                except ValueError:
                    continue
                if line.get("session_id") != session_id:
                    continue
                if line.get("msg") == "session forwarded":
                    hops["region"] = str(line.get("transceiver", "")).removeprefix("trx-") or None
                    hops.update({k: line.get(k) for k in ("whip_ms", "forward_ms", "new_connection")})
                elif line.get("msg") == "session answered":
                    hops.update({k: line.get(k) for k in ("answer_ms", "claim_ms")})
        return hops if "region" in hops else {}

    async def resolve(self, city: City) -> str | None:
        """The edge the mesh name resolves to in ``city``'s namespace (through its resolver, the geo DNS
        server), or None if it does not resolve to an edge."""
        proc = await asyncio.create_subprocess_exec(
            *netns.exec_args(self.plan.city_node(city), "getent", "ahostsv4", self.plan.mesh_name),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await proc.communicate()
        fields = out.decode().split()
        node = _node_at(self.plan, fields[0]) if fields else None
        return node.name if node is not None and node.role == "edge" else None

    async def call(self, city: City, url: str, duration_s: float, wav: str) -> dict:
        """One ``voicemesh call url`` from ``city``'s namespace; its CallReport as a dict (``ok`` False
        with ``error`` set if the client did not report)."""
        node = self.plan.city_node(city)
        argv = self._voicemesh("call", url, "--wav", wav, "--bind", str(node.address), "--duration", str(duration_s),
                               "--json")
        return await self._json_run(node, argv, duration_s + CALL_SLACK_S)

    async def browser_call(self, city: City, seconds: float, wav: str, page: str = "") -> dict:
        """A call from headless Chromium in ``city``'s namespace to ``http://<mesh name>/<page>`` (an edge's
        page: the call page, or ``realtime``; voicemesh/app/lab/browser.py); its result with ``edge`` added:
        the edge it connected through."""
        node = self.plan.city_node(city)
        argv = [sys.executable, "-m", "voicemesh.app.lab.browser", f"http://{self.plan.mesh_name}/{page}", "--wav", wav,
                "--seconds", str(seconds)]
        result = await self._json_run(node, argv, seconds + CALL_SLACK_S)
        remote = str(result.get("remote_address") or "").rsplit(":", 1)[0]
        edge = _node_at(self.plan, remote) if remote else None
        return {**result, "edge": edge.name if edge is not None else None}

    async def _json_run(self, node: Node, argv: list[str], timeout_s: float) -> dict:
        proc = await asyncio.create_subprocess_exec(*netns.exec_args(node, *argv), stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                    env=self.env)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return {"ok": False, "error": f"no report within {timeout_s:g} s"}
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            tail = err.decode(errors="replace").strip().splitlines()[-5:]
            return {"ok": False, "error": f"exit status {proc.returncode}, no report: " + " | ".join(tail)}

    async def close(self) -> None:
        """SIGTERM every part (SIGKILL after STOP_TIMEOUT_S), stop the WAN, remove the namespaces, links
        and work directory."""
        for _, proc, _ in reversed(self._parts):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc, _ in self._parts:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._parts.clear()
        if self.wan is not None:
            self.wan.stop()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        netns.down()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def _node_at(plan: Plan, text: str) -> Node | None:
    """The lab node whose address is ``text``, or None (not an IPv4 address, or no node has it)."""
    try:
        return plan.by_address(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def write_geoip(plan: Plan, path: Path) -> None:
    """Write a GeoIP2-City database placing each client city's /24 at the city's coordinates
    (mmdb-writer, laid out as MaxMind's: IPv4 inside IPv6)."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City", languages=["en"],
                        description={"en": "voicemesh lab: each client city's /24 at its coordinates"})
    for city in plan.cities:
        writer.insert_network(IPSet([str(plan.city_node(city).network)]), {
            "city": {"names": {"en": city.name}},
            "location": {"latitude": city.lat, "longitude": city.lon, "accuracy_radius": 20}})
    writer.to_db_file(str(path))


def down() -> list[str]:
    """Remove whatever a lab left behind: its namespaces with what still runs in them (netns.down) and
    its work directories. Returns the namespaces removed."""
    removed = netns.down()
    for parent in {Path("/dev/shm"), Path(tempfile.gettempdir())}:
        for workdir in parent.glob(PREFIX + "*"):
            shutil.rmtree(workdir, ignore_errors=True)
    return removed


async def run(plan: Plan, duration_s: float, wav: str | None = None,
              progress: Callable[[str], None] = lambda line: None, fail_region: str | None = None) -> dict:
    """Build the lab, call from every city through the mesh and straight to the central region, tear it
    down; the lab report (voicemesh/app/lab/report.py). ``progress`` is told of each phase, city and call.

    ``fail_region``: after those calls, kill that core region's transceiver and etcd and call again through
    the mesh from every city whose call went there; the report's ``failover`` list (report.failover_result).

    Raises LabError if the lab cannot be built, or ("unknown_region") for a ``fail_region`` not in the lab.
    """
    if fail_region is not None and fail_region not in {r.name for r in plan.regions}:
        raise LabError("unknown_region", f"--fail-region {fail_region}: the lab's regions are "
                                         f"{', '.join(r.name for r in plan.regions)}")
    wav = wav or bundled_speech()
    central = plan.node(plan.central_edge)
    direct_url = f"http://{central.address}/v1/sessions?region={plan.central.name}"
    mesh_url = f"http://{plan.mesh_name}/v1/sessions"
    cities, failover = [], []
    async with Lab(plan, progress) as lab:
        progress(f"lab up: {len(plan.nodes)} namespaces in {lab.workdir}")
        for n, city in enumerate(plan.cities, 1):
            progress(f"city {n}/{len(plan.cities)} {city.key}: resolving {plan.mesh_name}")
            edge = await lab.resolve(city)
            progress(f"city {n}/{len(plan.cities)} {city.key}: mesh call through {edge or 'nothing'}")
            mesh = await lab.call(city, mesh_url, duration_s, wav)
            progress(f"city {n}/{len(plan.cities)} {city.key}: direct call to {plan.central.name}")
            direct = await lab.call(city, direct_url, duration_s, wav)
            hops = (lab.answer_hops(mesh.get("session_id", "")), lab.answer_hops(direct.get("session_id", "")))
            cities.append(report.city_result(plan, city, edge, mesh, direct, hops))
            progress(report.format_progress(cities[-1]))
        if fail_region is not None:
            progress(f"failing region {fail_region}: killing its transceiver and etcd")
            await lab.fail_region(fail_region)
            for row, city in zip(cities, plan.cities, strict=True):
                if row["mesh"]["region"] != fail_region:
                    continue
                edge = await lab.resolve(city)
                call = await lab.call(city, mesh_url, duration_s, wav)
                failover.append(report.failover_result(plan, city, edge, fail_region, call,
                                                       lab.answer_hops(call.get("session_id", "")).get("region")))
                progress(report.format_failover(failover[-1]))
        assert lab.wan is not None, "started by Lab.__aenter__"
        wan = lab.wan.stats()
    return report.lab_result(plan, cities, wan, failover if fail_region is not None else None)
