"""The mesh under attack: a real etcd and each voicemesh part as its own process on loopback.

Parts are started as an operator starts them (``python -m voicemesh <part> --flags``, settings in the
environment), their stderr kept in a log file each. etcd serves TLS with a throwaway CA and auth on
(``voicemesh registry init``), each part on its own client certificate (README "etcd with TLS and
auth"), unless the mesh is made with ``etcd_auth=False``. Legitimate calls are ``voicemesh call`` processes.
Counters come from the parts' own ``GET /v1/status``: the edge relay's drops by reason and the
transceiver mux's counters.
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

from voicemesh.app.demo import bundled_speech
from voicemesh.app.pki import CertificateAuthority
from voicemesh.wire.signaling import SDP_TYPE

from .net import OnPath, free_udp_port

ONPATH_INSIDE = "127.10.0.1"
"""The address the main edge advertises as its relay: the on-path hop every legitimate call crosses."""
ONPATH_OUTSIDE = "127.10.0.2"
CALLER = "127.0.0.1"
"""Legitimate callers gather their ICE candidate here; their WHIP requests come from 127.0.0.1 too."""


class PartFailed(RuntimeError):
    """A part did not start or answer; the message holds the tail of its log."""


@dataclass
class Part:
    """One running process: ``http`` is its base URL (empty for etcd and DNS), ``udp`` its public UDP address."""

    name: str
    process: subprocess.Popen
    log: Path
    http: str = ""
    udp: tuple[str, int] = ("", 0)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _tcp_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def short_clip(source: str, seconds: float, into: Path) -> str:
    """The first ``seconds`` of the WAV ``source``, written into ``into``; returns its path."""
    path = into / "clip.wav"
    with wave.open(source) as src, wave.open(str(path), "wb") as dst:
        dst.setparams(src.getparams())
        dst.writeframes(src.readframes(int(seconds * src.getframerate())))
    return str(path)


class Mesh:
    """etcd, the main transceiver (capacity 50, in-process echo agent) and the main edge behind an on-path hop.

    ``start_edge``, ``start_transceiver`` and ``start_dns`` add parts for one attack; ``stop_part`` ends one.
    ``clip_s`` shortens legitimate calls (None: the whole bundled clip). ``etcd_auth`` runs etcd with TLS,
    client certificates and auth, a user per part (NODES); False runs it in plaintext, open to every client.
    """

    NODES = ["edge/local/edge-main", "edge/local/edge-flood", "transceiver/local/trx-main",
             "transceiver/adm/trx-adm", "dns"]
    """The etcd users ``voicemesh registry init`` creates: every part an attack starts."""

    def __init__(self, workdir: Path, clip_s: float | None = None, etcd_auth: bool = True) -> None:
        self.workdir = workdir
        self.etcd_auth = etcd_auth
        self.etcd_url = ""
        self.pki = workdir / "pki"
        self.env = {**os.environ, "VOICEMESH_TOKEN_KEYS": f"1:{secrets.token_hex(32)}",
                    "VOICEMESH_LOG_LEVEL": "warning", "VOICEMESH_LOG_FORMAT": "json"}
        self.clip = short_clip(bundled_speech(), clip_s, workdir) if clip_s else bundled_speech()
        self.parts: list[Part] = []
        self.http: aiohttp.ClientSession | None = None
        self.etcd: Part | None = None
        self.transceiver: Part | None = None
        self.edge: Part | None = None
        self.onpath: OnPath | None = None

    async def start(self) -> None:
        """Start etcd, the main transceiver and the main edge with its on-path hop. Raises PartFailed."""
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        await self._start_etcd()
        self.transceiver = await self.start_transceiver("trx-main", capacity=50)
        relay_port, hop_port = free_udp_port(), free_udp_port(ONPATH_INSIDE)
        self.edge = await self.start_edge("edge-main", public=f"127.0.0.1:{relay_port}",
                                          advertise=f"{ONPATH_INSIDE}:{hop_port}")
        self.onpath = OnPath((ONPATH_INSIDE, hop_port), ONPATH_OUTSIDE, self.edge.udp,
                             asyncio.get_running_loop())

    async def close(self) -> None:
        if self.onpath is not None:
            self.onpath.close()
        for part in reversed(self.parts):
            part.stop()
        if self.http is not None:
            await self.http.close()

    def credentials(self, user: str) -> dict[str, str]:
        """The VOICEMESH_REGISTRY_CERT and _KEY files of etcd user ``user`` ({} without etcd auth)."""
        if not self.etcd_auth:
            return {}
        name = user.replace("/", "_")
        return {"VOICEMESH_REGISTRY_CERT": str(self.pki / f"{name}.pem"),
                "VOICEMESH_REGISTRY_KEY": str(self.pki / f"{name}-key.pem")}

    def _spawn(self, name: str, args: list[str], user: str = "") -> Part:
        log = self.workdir / f"{name}.log"
        env = {**self.env, **self.credentials(user)} if user else self.env
        with open(log, "wb") as log_file:
            process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
        part = Part(name, process, log)
        self.parts.append(part)
        return part

    def stop_part(self, part: Part) -> None:
        part.stop()
        self.parts.remove(part)

    async def _start_etcd(self) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            raise PartFailed("etcd not found: apt-get install etcd-server (make attack does)")
        client, peer, metrics = _tcp_ports(3)
        scheme = "https" if self.etcd_auth else "http"
        client_url, peer_url = f"{scheme}://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        data = Path("/dev/shm") if Path("/dev/shm").is_dir() else self.workdir
        data_dir = Path(data) / f"voicemesh-attack-etcd-{os.getpid()}"
        tls: list[str] = []
        if self.etcd_auth:
            self.pki.mkdir(parents=True, exist_ok=True)
            ca = CertificateAuthority()
            ca.save(self.pki)
            cert, key = ca.server(["127.0.0.1"]).write(self.pki, "etcd")
            for user in ["root", *self.NODES]:
                ca.client(user).write(self.pki, user.replace("/", "_"))
            tls = ["--cert-file", str(cert), "--key-file", str(key), "--client-cert-auth",
                   "--trusted-ca-file", str(self.pki / "ca.pem")]
            self.env["VOICEMESH_REGISTRY_CA"] = str(self.pki / "ca.pem")
        self.etcd = self._spawn("etcd", [
            binary, "--name", "s1", "--data-dir", str(data_dir), "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url, "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url, "--initial-cluster", f"s1={peer_url}",
            "--listen-metrics-urls", f"http://127.0.0.1:{metrics}",
            "--heartbeat-interval", "10", "--election-timeout", "100", "--log-level", "error", *tls])
        self._etcd_data = data_dir
        await self._ready(self.etcd, f"http://127.0.0.1:{metrics}/health", lambda body: body.get("health") == "true")
        self.etcd_url = self.env["VOICEMESH_REGISTRY"] = f"etcd://127.0.0.1:{client}"
        if self.etcd_auth:
            init = self._spawn("registry-init", [sys.executable, "-m", "voicemesh", "registry", "init",
                                                 *(f"--node={node}" for node in self.NODES)], user="root")
            if await asyncio.to_thread(init.process.wait) != 0:
                raise PartFailed(f"voicemesh registry init failed:\n{init.tail()}")
            self.parts.remove(init)

    async def _ready(self, part: Part, url: str, ready=lambda body: True, deadline_s: float = 30.0) -> dict:
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
            await asyncio.sleep(0.1)
        raise PartFailed(f"{part.name} not ready at {url}:\n{part.tail()}")

    async def start_transceiver(self, node_id: str, *, capacity: int, region: str = "local", region_id: int = 1,
                                lat: float = 0.0, lon: float = 0.0) -> Part:
        """A transceiver with the echo agent in its process, registered when this returns."""
        (port,) = _tcp_ports(1)
        part = self._spawn(node_id, [
            sys.executable, "-m", "voicemesh", "transceiver", "--node-id", node_id, "--region", region,
            "--region-id", str(region_id), "--http", f"127.0.0.1:{port}", "--backbone", "127.0.0.1:0",
            "--capacity", str(capacity), "--agent=", "--lat", str(lat), "--lon", str(lon),
            "--drain-timeout-s", "1"], user=f"transceiver/{region}/{node_id}")
        part.http = f"http://127.0.0.1:{port}"
        await self._ready(part, f"{part.http}/v1/status", lambda body: body.get("node") == node_id)
        return part

    async def start_edge(self, node_id: str, *, public: str = "", advertise: str = "", **flags: object) -> Part:
        """An edge (relay and WHIP front); ``flags`` are more ``--flag value`` settings (``max_flows=1000``)."""
        (port,) = _tcp_ports(1)
        public = public or f"127.0.0.1:{free_udp_port()}"
        args = [sys.executable, "-m", "voicemesh", "edge", "--node-id", node_id, "--region", "local",
                "--public", public, "--http", f"127.0.0.1:{port}", "--backbone", "127.0.0.1:0",
                "--drain-timeout-s", "1"]
        if advertise:
            args += ["--advertise", advertise]
        for name, value in flags.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        part = self._spawn(node_id, args, user=f"edge/local/{node_id}")
        part.http = f"http://127.0.0.1:{port}"
        host, _, udp_port = public.rpartition(":")
        part.udp = (host, int(udp_port))
        await self._ready(part, f"{part.http}/v1/status")
        return part

    def start_dns(self, default_edge: str) -> Part:
        """The geo DNS server for voicemesh.test with default settings, answering every client with
        ``default_edge`` (not waited for: it has no status endpoint; query it until it answers)."""
        port = free_udp_port()
        part = self._spawn("dns", [
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

    async def call(self, edge: Part, delay_s: float = 0.0) -> dict:
        """Place one legitimate call through ``edge`` with ``voicemesh call``, after ``delay_s``.

        Returns its JSON report (``ok``, ``error``, ``packets_received``, ...), or ``ok`` False with the reason.
        """
        await asyncio.sleep(delay_s)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicemesh", "call", f"{edge.http}/v1/sessions", "--wav", self.clip,
            "--bind", CALLER, "--json", env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate()
        lines = out.decode().strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            return {"ok": False, "error": f"voicemesh call exited {process.returncode}: {err.decode()[-300:]}"}

    async def whip_post(self, url: str, sdp: str, source: str, headers: dict[str, str] | None = None,
                        ) -> tuple[int, str, str]:
        """POST an offer from local address ``source``; returns (status, body, Location) and (0, error, "")
        if the connection failed."""
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20)) as http:
                async with http.post(url, data=sdp.encode(), headers={"Content-Type": SDP_TYPE, **(headers or {})}
                                     ) as resp:
                    return resp.status, await resp.text(), resp.headers.get("Location", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, repr(exc), ""

    async def delete(self, base: str, location: str) -> None:
        """End a session an attack created (DELETE on its Location under ``base``); errors ignored."""
        assert self.http is not None
        try:
            async with self.http.delete(base + location) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            pass

    def cleanup(self) -> None:
        """Remove etcd's data directory (call after close)."""
        data = getattr(self, "_etcd_data", None)
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)
