"""A voicemesh mesh of real processes on loopback, for the harnesses that attack it or break it.

Parts are started as an operator starts them (``python -m voicemesh <part> --flags``, settings in the
environment), their stderr kept in a log file each. etcd serves TLS with a throwaway CA and auth on
(``voicemesh registry init``), each part on its own client certificate (README "etcd with TLS and
auth"), unless the mesh is made with ``etcd_auth=False``. Legitimate calls are ``voicemesh call`` processes.
Counters come from the parts' own ``GET /v1/status``. ``make attack`` (bench/attack) and ``make faults``
(bench/faults) build on ProcessMesh.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from etcd3aio import prefix_range_end

from voicemesh.app.pki import CertificateAuthority
from voicemesh.registry import RegistryTls
from voicemesh.registry.etcd import connect_client

from .net import free_udp_port

CALLER = "127.0.0.1"
"""Legitimate callers gather their ICE candidate here; their WHIP requests come from 127.0.0.1 too."""


class PartFailed(RuntimeError):
    """A part did not start or answer; the message holds the tail of its log."""


@dataclass
class Part:
    """One running process: ``http`` is its base URL (empty for etcd and DNS), ``udp`` its public UDP address
    (``grpc`` for an agent); ``args`` and ``user`` are how it was started, so it can be started again."""

    name: str
    process: subprocess.Popen
    log: Path
    http: str = ""
    udp: tuple[str, int] = ("", 0)
    grpc: str = ""
    args: tuple[str, ...] = ()
    user: str = ""
    registry: bool = True

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (SIGCONT first, in case a fault stopped it), then SIGKILL after 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash: no drain, no lease revoked."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def tcp_ports(count: int) -> list[int]:
    """``count`` TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_tcp_port(host: str) -> int:
    """A TCP port on ``host`` that was free a moment ago (any port if ``host`` is not local here: the
    address of another network namespace)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clip_of(source: str, seconds: float, into: Path, name: str = "clip.wav") -> str:
    """A WAV of ``seconds`` cut from ``source`` (repeated as often as needed), written into ``into``; its path."""
    path = into / name
    with wave.open(source) as src, wave.open(str(path), "wb") as dst:
        dst.setparams(src.getparams())
        frames = src.readframes(src.getnframes())
        want = int(seconds * src.getframerate()) * src.getsampwidth() * src.getnchannels()
        dst.writeframes((frames * (want // max(1, len(frames)) + 1))[:want])
    return str(path)


class ProcessMesh:
    """etcd and any voicemesh parts, each its own process, on loopback, in ``workdir`` (logs, certificates).

    ``nodes`` are the etcd users ``voicemesh registry init`` creates ("<role>/<region>/<node-id>", or
    "dns"): every part the harness will start. ``etcd_auth`` runs etcd with TLS, client certificates and
    auth, a user per part; False runs it in plaintext, open to every client. ``etcd_members`` > 1 runs a
    cluster on loopback (parts get every member as an endpoint). ``etcd_hosts``: more addresses of this host
    the (single) member serves clients on too, for parts in other network namespaces.
    """

    def __init__(self, workdir: Path, nodes: list[str], *, etcd_auth: bool = True, etcd_members: int = 1,
                 etcd_hosts: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.etcd_hosts = etcd_hosts
        self.nodes = nodes
        self.etcd_auth = etcd_auth
        self.etcd_members = etcd_members
        self.etcd_url = ""
        self.pki = workdir / "pki"
        self.env = {**os.environ, "VOICEMESH_TOKEN_KEYS": f"1:{secrets.token_hex(32)}",
                    "VOICEMESH_LOG_LEVEL": "warning", "VOICEMESH_LOG_FORMAT": "json"}
        self.parts: list[Part] = []
        self.etcd_parts: list[Part] = []
        self.http: aiohttp.ClientSession | None = None
        self._data_dirs: list[Path] = []

    @property
    def etcd(self) -> Part | None:
        """The first etcd member (the only one unless ``etcd_members`` > 1)."""
        return self.etcd_parts[0] if self.etcd_parts else None

    async def open(self) -> None:
        """Start etcd (and create the parts' etcd users). Raises PartFailed."""
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        await self._start_etcd()

    async def close(self) -> None:
        for part in reversed(self.parts):
            part.stop()
        if self.http is not None:
            await self.http.close()

    def cleanup(self) -> None:
        """Remove etcd's data directories (call after close)."""
        for data in self._data_dirs:
            shutil.rmtree(data, ignore_errors=True)

    def credentials(self, user: str) -> dict[str, str]:
        """The VOICEMESH_REGISTRY_CERT and _KEY files of etcd user ``user`` ({} without etcd auth)."""
        if not self.etcd_auth:
            return {}
        name = user.replace("/", "_")
        return {"VOICEMESH_REGISTRY_CERT": str(self.pki / f"{name}.pem"),
                "VOICEMESH_REGISTRY_KEY": str(self.pki / f"{name}-key.pem")}

    async def etcd_get(self, key: str, prefix: bool = True) -> dict[str, tuple[bytes, int]]:
        """Keys under ``key`` (or exactly ``key``) in the mesh's etcd, read as root: key -> (value, mod
        revision)."""
        tls = None
        if self.etcd_auth:
            creds = self.credentials("root")
            tls = RegistryTls.from_files(self.env["VOICEMESH_REGISTRY_CA"], creds["VOICEMESH_REGISTRY_CERT"],
                                         creds["VOICEMESH_REGISTRY_KEY"])
        client = connect_client(self.etcd_url.removeprefix("etcd://").split(","), tls)
        await client.connect()
        try:
            assert client.kv is not None
            end = prefix_range_end(key) if prefix else None
            response = await client.kv.get(key, range_end=end, timeout=2.0)
            return {kv.key.decode(): (kv.value, kv.mod_revision) for kv in response.kvs}
        finally:
            await client.close()

    def spawn(self, name: str, args: list[str], user: str = "", registry: bool = True,
              env: dict[str, str] | None = None) -> Part:
        """Start ``args`` with the mesh's environment and ``env`` (and etcd user ``user``'s certificate;
        without VOICEMESH_REGISTRY unless ``registry``), stderr to a log."""
        log = self.workdir / f"{name}.log"
        env = {**self.env, **self.credentials(user), **(env or {})}
        if not registry:
            env.pop("VOICEMESH_REGISTRY", None)
        with open(log, "ab") as log_file:
            process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
        part = Part(name, process, log, args=tuple(args), user=user, registry=registry)
        self.parts.append(part)
        return part

    def stop_part(self, part: Part) -> None:
        part.stop()
        self.parts.remove(part)

    def kill_part(self, part: Part) -> None:
        """SIGKILL ``part`` (a crash) and forget it."""
        part.kill()
        self.parts.remove(part)

    def respawn(self, part: Part) -> Part:
        """Start ``part``'s command again (same flags, same ports, same user); the new Part keeps its addresses."""
        again = self.spawn(part.name, list(part.args), part.user, part.registry)
        again.http, again.udp, again.grpc = part.http, part.udp, part.grpc
        return again

    async def _start_etcd(self) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            raise PartFailed("etcd not found: apt-get install etcd-server (make attack and make faults do)")
        scheme = "https" if self.etcd_auth else "http"
        members = [(f"s{i + 1}", *tcp_ports(3)) for i in range(self.etcd_members)]
        cluster = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _client, peer, _metrics in members)
        data = Path("/dev/shm") if Path("/dev/shm").is_dir() else self.workdir
        tls: list[str] = []
        if self.etcd_auth:
            self.pki.mkdir(parents=True, exist_ok=True)
            ca = CertificateAuthority()
            ca.save(self.pki)
            cert, key = ca.server(["127.0.0.1", *self.etcd_hosts]).write(self.pki, "etcd")
            for user in ["root", *self.nodes]:
                ca.client(user).write(self.pki, user.replace("/", "_"))
            tls = ["--cert-file", str(cert), "--key-file", str(key), "--client-cert-auth",
                   "--trusted-ca-file", str(self.pki / "ca.pem")]
            self.env["VOICEMESH_REGISTRY_CA"] = str(self.pki / "ca.pem")
        for name, client, peer, metrics in members:
            data_dir = data / f"voicemesh-mesh-etcd-{os.getpid()}-{name}"
            self._data_dirs.append(data_dir)
            client_url, peer_url = f"{scheme}://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
            listen = ",".join([client_url, *(f"{scheme}://{host}:{client}" for host in self.etcd_hosts)])
            part = self.spawn(f"etcd-{name}", [
                binary, "--name", name, "--data-dir", str(data_dir), "--listen-client-urls", listen,
                "--advertise-client-urls", client_url, "--listen-peer-urls", peer_url,
                "--initial-advertise-peer-urls", peer_url, "--initial-cluster", cluster,
                "--initial-cluster-state", "new", "--listen-metrics-urls", f"http://127.0.0.1:{metrics}",
                "--heartbeat-interval", "10", "--election-timeout", "100", "--log-level", "error", *tls])
            part.http = f"http://127.0.0.1:{metrics}"
            part.udp = ("127.0.0.1", client)
            self.etcd_parts.append(part)
        for part in self.etcd_parts:
            await self.ready(part, f"{part.http}/health", lambda body: body.get("health") == "true")
        self.etcd_url = self.env["VOICEMESH_REGISTRY"] = "etcd://" + ",".join(
            f"127.0.0.1:{part.udp[1]}" for part in self.etcd_parts)
        if self.etcd_auth:
            init = self.spawn("registry-init", [sys.executable, "-m", "voicemesh", "registry", "init",
                                                *(f"--node={node}" for node in self.nodes)], user="root")
            if await asyncio.to_thread(init.process.wait) != 0:
                raise PartFailed(f"voicemesh registry init failed:\n{init.tail()}")
            self.parts.remove(init)

    async def ready(self, part: Part, url: str, ready=lambda body: True, deadline_s: float = 30.0) -> dict:
        """Poll ``url`` until its JSON passes ``ready``; returns it. Raises PartFailed if the part exits or
        ``deadline_s`` passes."""
        assert self.http is not None
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if part.process.poll() is not None:
                raise PartFailed(f"{part.name} exited with {part.process.returncode}:\n{part.tail()}")
            try:
                async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    body = await resp.json(content_type=None)
                    if ready(body):
                        return body
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            await asyncio.sleep(0.05)
        raise PartFailed(f"{part.name} not ready at {url}:\n{part.tail()}")

    async def listening(self, part: Part, deadline_s: float = 30.0) -> float:
        """Wait until ``part``'s gRPC port accepts a TCP connection; returns time.monotonic() then.
        Raises PartFailed."""
        host, _, port = part.grpc.rpartition(":")
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if part.process.poll() is not None:
                raise PartFailed(f"{part.name} exited with {part.process.returncode}:\n{part.tail()}")
            try:
                _reader, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                await asyncio.sleep(0.01)
                continue
            at = time.monotonic()
            writer.close()
            return at
        raise PartFailed(f"{part.name} not listening on {part.grpc}:\n{part.tail()}")

    async def start_transceiver(self, node_id: str, *, capacity: int, region: str = "local", region_id: int = 1,
                                lat: float = 0.0, lon: float = 0.0, agent: str = "", http_host: str = "127.0.0.1",
                                backbone_host: str = "127.0.0.1", wrap: tuple[str, ...] = (),
                                etcd_host: str = "") -> Part:
        """A transceiver, registered when this returns. ``agent``: "" runs the echo agent in its process,
        "host:port" an agent there, "registry" the agents in the registry. ``http_host`` and ``backbone_host``
        are the addresses it serves its API and its backbone on; ``wrap`` prefixes its command line (``ip netns
        exec NAME``); ``etcd_host`` is the address it reaches etcd at, if not 127.0.0.1."""
        port = free_tcp_port(http_host)
        env = {"VOICEMESH_REGISTRY": self.etcd_url.replace("127.0.0.1", etcd_host)} if etcd_host else None
        part = self.spawn(node_id, [
            *wrap, sys.executable, "-m", "voicemesh", "transceiver", "--node-id", node_id, "--region", region,
            "--region-id", str(region_id), "--http", f"{http_host}:{port}", "--backbone", f"{backbone_host}:0",
            "--capacity", str(capacity), f"--agent={agent}", "--lat", str(lat), "--lon", str(lon),
            "--drain-timeout-s", "1"], user=f"transceiver/{region}/{node_id}", env=env)
        part.http = f"http://{http_host}:{port}"
        await self.ready(part, f"{part.http}/v1/status", lambda body: body.get("node") == node_id)
        return part

    async def start_edge(self, node_id: str, *, public: str = "", advertise: str = "", backbone_host: str = "127.0.0.1",
                         **flags: object) -> Part:
        """An edge (relay and WHIP front), its backbone on ``backbone_host`` (any port) unless a ``backbone``
        flag names the address; ``flags`` are more ``--flag value`` settings (``max_flows=1000``; a bool is
        ``--flag`` or ``--no-flag``)."""
        (port,) = tcp_ports(1)
        public = public or f"127.0.0.1:{free_udp_port()}"
        backbone = flags.pop("backbone", f"{backbone_host}:0")
        args = [sys.executable, "-m", "voicemesh", "edge", "--node-id", node_id, "--region", "local",
                "--public", public, "--http", f"127.0.0.1:{port}", "--backbone", str(backbone),
                "--drain-timeout-s", "1"]
        if advertise:
            args += ["--advertise", advertise]
        for name, value in flags.items():
            flag = name.replace("_", "-")
            args += [f"--{flag}" if value else f"--no-{flag}"] if isinstance(value, bool) else [f"--{flag}", str(value)]
        part = self.spawn(node_id, args, user=f"edge/local/{node_id}")
        part.http = f"http://127.0.0.1:{port}"
        host, _, udp_port = public.rpartition(":")
        part.udp = (host, int(udp_port))
        await self.ready(part, f"{part.http}/v1/status")
        return part

    async def start_agent(self, node_id: str, *, region: str = "local", registry: bool = False) -> Part:
        """An echo agent serving gRPC on a free port, listening when this returns; with ``registry`` it
        registers itself (for transceivers with ``--agent registry``)."""
        (port,) = tcp_ports(1)
        args = [sys.executable, "-m", "voicemesh", "agent", "--bind", f"127.0.0.1:{port}", "--node-id", node_id,
                "--region", region]
        part = self.spawn(node_id, args, user=f"agent/{region}/{node_id}" if registry else "", registry=registry)
        part.grpc = f"127.0.0.1:{port}"
        await self.listening(part)
        return part

    def start_dns(self, default_edge: str) -> Part:
        """The geo DNS server for voicemesh.test with default settings, answering every client with
        ``default_edge`` (not waited for: it has no status endpoint; query it until it answers)."""
        port = free_udp_port()
        part = self.spawn("dns", [
            sys.executable, "-m", "voicemesh", "dns", "--bind", f"127.0.0.1:{port}", "--zone", "voicemesh.test",
            "--mesh-name", "rtc.voicemesh.test", "--default-edge", default_edge,
            "--ns", "ns1.voicemesh.test=127.0.0.53"], user="dns")
        part.udp = ("127.0.0.1", port)
        return part

    async def status(self, part: Part) -> dict:
        """The part's ``GET /v1/status`` ({} if it does not answer)."""
        assert self.http is not None
        try:
            async with self.http.get(f"{part.http}/v1/status") as resp:
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return {}

    async def call(self, edge: Part, clip: str, *, delay_s: float = 0.0, duration_s: float | None = None,
                   redial: bool = False) -> dict:
        """Place one legitimate call through ``edge`` with ``voicemesh call`` speaking ``clip``, after ``delay_s``
        (``redial``: with ``--redial``).

        Returns its JSON report (``ok``, ``error``, ``packets_received``, ...), or ``ok`` False with the reason.
        """
        await asyncio.sleep(delay_s)
        more = ["--duration", str(duration_s)] if duration_s else []
        more += ["--redial"] if redial else []
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicemesh", "call", f"{edge.http}/v1/sessions", "--wav", clip,
            "--bind", CALLER, "--json", *more, env=self.env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate()
        lines = out.decode().strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            return {"ok": False, "error": f"voicemesh call exited {process.returncode}: {err.decode()[-300:]}"}
