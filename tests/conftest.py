"""Shared pytest set-up: every test in exactly one tier, run unit first; hypothesis profiles; a real
single-node etcd on loopback (fixture ``etcd``), ``voicemesh`` processes, and agent links."""

from __future__ import annotations

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


def _healthy(client_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{client_port}/health", timeout=0.5) as response:
            return json.load(response).get("health") == "true"
    except (OSError, ValueError):
        return False


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """A fresh etcd (Debian's ``etcd`` binary) with fast raft timers and its data on tmpfs.

    Torn down with SIGTERM, then SIGKILL after 2 s (a member that lost quorum can hang on SIGTERM).
    """
    binary = shutil.which("etcd")
    if binary is None:
        pytest.skip("etcd binary not found: apt-get install etcd-server")
    base = Path(tempfile.mkdtemp(prefix="voicemesh-etcd-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    client_port, peer_port = free_ports(2)
    client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
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
                "--heartbeat-interval", "10",
                "--election-timeout", "100",
                "--logger", "zap",
                "--log-level", "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 15
        while not _healthy(client_port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"etcd did not become healthy on {client_url}:\n{log_path.read_text()}")
            time.sleep(0.02)
        yield EtcdServer(f"127.0.0.1:{client_port}", f"etcd://127.0.0.1:{client_port}", process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(base, ignore_errors=True)


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
