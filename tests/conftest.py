"""Shared pytest set-up: every test in exactly one tier, run unit first; hypothesis profiles; a real
single-node etcd on loopback (fixture ``etcd``), ``voicemesh`` processes, and agent links."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from procs import free_ports

TIERS = ("unit", "integration", "system")
"""pytest markers of the test tiers (pyproject.toml), in the order `make test` runs them."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail the collection of a test that is not in exactly one tier; order the rest unit first (a stable
    sort, so each file keeps its order), so a quick failure shows before the slow tiers run."""
    tiers = {item: [m.name for m in item.iter_markers() if m.name in TIERS] for item in items}
    stray = [item.nodeid for item, marks in tiers.items() if len(marks) != 1]
    if stray:
        raise pytest.UsageError(f"tests need exactly one tier marker ({', '.join(TIERS)}), as a module-level "
                                f"pytestmark: {', '.join(stray)}")
    items.sort(key=lambda item: TIERS.index(tiers[item][0]))


# Hypothesis profiles. "ci", the default, keeps the fuzz tests (tests/test_fuzz_*.py) fast and repeatable in
# the unit tier: a fixed seed and few examples. "fuzz" is `make fuzz`'s long random campaign
# (--hypothesis-profile=fuzz; VOICEMESH_FUZZ_EXAMPLES examples per target). Neither has a deadline: tests
# never assert on time.
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=int(os.environ.get("VOICEMESH_FUZZ_EXAMPLES", "20000")),
                          deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@dataclass
class EtcdServer:
    """A running etcd: ``endpoint`` is "127.0.0.1:port", ``url`` the registry URL for open_registry."""

    endpoint: str
    url: str
    process: subprocess.Popen

    def kill(self) -> None:
        """SIGKILL the server (a crash: no graceful shutdown) and reap it."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@dataclass
class SecureEtcd(EtcdServer):
    """An etcd serving TLS only and requiring client certificates from ``ca`` (auth is off until
    ``voicemesh registry init``); ``pki`` is the directory of ca.pem and the certificates ``tls`` wrote."""

    ca: object = None
    pki: Path = Path()

    def tls(self, user: str):
        """RegistryTls with a fresh client certificate whose CN (the etcd user) is ``user``."""
        from voicemesh.registry import RegistryTls

        issued = self.ca.client(user)
        return RegistryTls(self.ca.cert, issued.cert, issued.key)

    def files(self, user: str) -> dict[str, str]:
        """A client certificate for ``user`` written to files: the VOICEMESH_REGISTRY_* environment."""
        cert, key = self.ca.client(user).write(self.pki, user.replace("/", "_"))
        return {"VOICEMESH_REGISTRY": self.url, "VOICEMESH_REGISTRY_CA": str(self.pki / "ca.pem"),
                "VOICEMESH_REGISTRY_CERT": str(cert), "VOICEMESH_REGISTRY_KEY": str(key)}


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5) as response:
            return json.load(response).get("health") == "true"
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _run_etcd(base: Path, scheme: str = "http", extra: tuple[str, ...] = ()) -> Iterator[tuple[int, subprocess.Popen]]:
    """Run Debian's ``etcd`` with fast raft timers and its data in ``base``; yield (client port, process)
    once healthy (checked on a plain-HTTP metrics port). Torn down with SIGTERM, then SIGKILL after 2 s
    (a member that lost quorum can hang on SIGTERM)."""
    binary = shutil.which("etcd")
    if binary is None:
        pytest.skip("etcd binary not found: apt-get install etcd-server")
    client_port, peer_port, metrics_port = free_ports(3)
    client_url, peer_url = f"{scheme}://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    log_path = base / "etcd.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                "--name", "s1",
                "--data-dir", str(base / "data"),
                "--listen-client-urls", client_url,
                "--advertise-client-urls", client_url,
                "--listen-peer-urls", peer_url,
                "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"s1={peer_url}",
                "--listen-metrics-urls", f"http://127.0.0.1:{metrics_port}",
                "--heartbeat-interval", "10",
                "--election-timeout", "100",
                "--logger", "zap",
                "--log-level", "error",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 15
        while not _healthy(metrics_port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"etcd did not become healthy on {client_url}:\n{log_path.read_text()}")
            time.sleep(0.02)
        yield client_port, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _tmpfs_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/dev/shm" if Path("/dev/shm").is_dir() else None))


@contextlib.contextmanager
def _plain_etcd() -> Iterator[EtcdServer]:
    base = _tmpfs_dir("voicemesh-etcd-")
    try:
        with _run_etcd(base) as (port, process):
            yield EtcdServer(f"127.0.0.1:{port}", f"etcd://127.0.0.1:{port}", process)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """A fresh etcd (Debian's ``etcd`` binary), plain HTTP, no auth, its data on tmpfs."""
    with _plain_etcd() as server:
        yield server


@pytest.fixture
def etcd2() -> Iterator[EtcdServer]:
    """A second fresh etcd like ``etcd``: another region's cluster."""
    with _plain_etcd() as server:
        yield server


@contextlib.contextmanager
def _secure_etcd(ca) -> Iterator[SecureEtcd]:
    base = _tmpfs_dir("voicemesh-etcd-tls-")
    ca.save(base)
    cert, key = ca.server(["127.0.0.1", "localhost"]).write(base, "etcd")
    tls = ("--cert-file", str(cert), "--key-file", str(key), "--client-cert-auth",
           "--trusted-ca-file", str(base / "ca.pem"))
    try:
        with _run_etcd(base, "https", tls) as (port, process):
            yield SecureEtcd(f"127.0.0.1:{port}", f"etcd://127.0.0.1:{port}", process, ca, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def secure_etcd() -> Iterator[SecureEtcd]:
    """A fresh etcd serving TLS with a throwaway CA and requiring client certificates from it
    (``--client-cert-auth``: with auth on, a certificate's CN is its etcd user)."""
    from voicemesh.app.pki import CertificateAuthority

    with _secure_etcd(CertificateAuthority()) as server:
        yield server


@pytest.fixture
def secure_etcd_pair() -> Iterator[tuple[SecureEtcd, SecureEtcd]]:
    """Two etcds like ``secure_etcd`` under one CA (the mesh's): two core regions' clusters."""
    from voicemesh.app.pki import CertificateAuthority

    ca = CertificateAuthority()
    with _secure_etcd(ca) as first, _secure_etcd(ca) as second:
        yield first, second


@pytest.fixture
def processes():
    """Start ``voicemesh <part> ...`` processes with extra environment; killed at teardown if still running."""
    procs: list[subprocess.Popen] = []

    def start(*args: str, env: dict[str, str]) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "voicemesh", *args], env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
async def links():
    """Start AgentLinks to loopback agent ports (``await links(port, **options)``); closed at teardown."""
    from voicemesh.core.agent_link import AgentLink

    started = []

    async def start(port, **options):
        link = AgentLink(f"127.0.0.1:{port}", **options)
        await link.start()
        started.append(link)
        return link

    yield start
    for link in started:
        await link.close()


@dataclass
class EtcdCluster:
    """A running 3-member etcd cluster on loopback: ``endpoints`` ("127.0.0.1:port" each), ``processes``."""

    endpoints: list[str]
    processes: list[subprocess.Popen]
    metrics_ports: list[int]

    def leader(self) -> int:
        """The index of the member that is leader now (its metrics say etcd_server_is_leader 1); -1 if none."""
        for index, port in enumerate(self.metrics_ports):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
                    if b"\netcd_server_is_leader 1" in response.read():
                        return index
            except OSError:
                continue
        return -1


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    """A fresh 3-member etcd cluster (Debian's ``etcd``), plain HTTP, fast raft timers, data on tmpfs."""
    binary = shutil.which("etcd")
    if binary is None:
        pytest.skip("etcd binary not found: apt-get install etcd-server")
    base = _tmpfs_dir("voicemesh-etcd-cluster-")
    ports = [free_ports(3) for _ in range(3)]
    cluster = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_client, peer, _metrics) in enumerate(ports))
    processes = []
    try:
        for i, (client, peer, metrics) in enumerate(ports):
            with open(base / f"m{i}.log", "wb") as log_file:
                processes.append(subprocess.Popen([
                    binary, "--name", f"m{i}", "--data-dir", str(base / f"m{i}"),
                    "--listen-client-urls", f"http://127.0.0.1:{client}",
                    "--advertise-client-urls", f"http://127.0.0.1:{client}",
                    "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-cluster", cluster, "--initial-cluster-state", "new",
                    "--listen-metrics-urls", f"http://127.0.0.1:{metrics}",
                    "--heartbeat-interval", "10", "--election-timeout", "100", "--log-level", "error",
                ], stdout=subprocess.DEVNULL, stderr=log_file))
        deadline = time.monotonic() + 20
        while not all(_healthy(metrics) for _client, _peer, metrics in ports):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                pytest.fail("the etcd cluster did not become healthy:\n" + (base / "m0.log").read_text())
            time.sleep(0.05)
        yield EtcdCluster([f"127.0.0.1:{client}" for client, _peer, _metrics in ports], processes,
                          [metrics for _client, _peer, metrics in ports])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(base, ignore_errors=True)
