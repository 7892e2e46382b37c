"""``voicemesh transceiver --workers 2`` against a real etcd: two workers register as two transceivers (own
index, backbone and API each), both take calls through an edge, a killed worker is started again, and
SIGTERM drains both while their calls finish (each worker's API stays up while it drains, so the calls'
DELETEs still reach their owners). A worker that cannot start is given up on: the supervisor stops the others
and exits non-zero."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from procs import VOICEMESH, free_ports, wait_http

from voicemesh.app.demo import bundled_speech
from voicemesh.registry import NodeRecord, open_registry

pytestmark = pytest.mark.system


def transceivers(url: str) -> list[NodeRecord]:
    """The transceiver records in the registry at ``url``, by node id."""
    async def read() -> list[NodeRecord]:
        registry = open_registry(url)
        await registry.start()
        try:
            return sorted(registry.nodes("transceiver"), key=lambda n: n.node_id)
        finally:
            await registry.close()
    return asyncio.run(read())


def wait_for(check, what: str, deadline_s: float = 20.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_two_workers_register_take_calls_restart_and_drain(etcd, processes, tmp_path: Path) -> None:
    env = {"VOICEMESH_TOKEN_KEYS": f"1:{secrets.token_hex(32)}", "VOICEMESH_REGISTRY": etcd.url,
           "VOICEMESH_LOG_LEVEL": "info"}
    agent_port, edge_port = free_ports(2)
    processes("agent", "--bind", f"127.0.0.1:{agent_port}", env=env)
    supervisor = processes("transceiver", "--workers", "2", "--node-id", "trx-w", "--http", "127.0.0.1:0",
                           "--agent", f"127.0.0.1:{agent_port}", "--capacity", "1", env=env)

    def both_up() -> list[NodeRecord]:
        assert supervisor.poll() is None, supervisor.stderr.read().decode()
        nodes = transceivers(etcd.url)
        return nodes if [n.node_id for n in nodes] == ["trx-w-w0", "trx-w-w1"] else []

    first = wait_for(both_up, "two workers registered")
    assert len({n.index for n in first}) == 2 and len({n.backbone for n in first}) == 2
    assert len({n.http for n in first}) == 2

    worker0 = children(supervisor.pid)[0]
    subprocess.run(["kill", "-9", str(worker0)], check=True)
    nodes = wait_for(lambda: (n := both_up()) and n[0].http != first[0].http and n, "worker 0 started again")
    assert len(children(supervisor.pid)) == 2 and worker0 not in children(supervisor.pid)

    edge = processes("edge", "--public", "127.0.0.1:0", "--http", f"127.0.0.1:{edge_port}", env=env)
    wait_http(f"http://127.0.0.1:{edge_port}/v1/status", edge)
    statuses = [f"{n.http}/v1/status" for n in nodes]

    def sessions() -> list[int]:
        return [wait_http(url, supervisor)["sessions"] for url in statuses]

    calls = []
    for expected in ([1], [1, 1]):
        calls.append(subprocess.Popen(
            [*VOICEMESH, "call", f"http://127.0.0.1:{edge_port}/v1/sessions", "--wav", bundled_speech(),
             "--bind", "127.0.0.1", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        wait_for(lambda e=expected: sorted(s for s in sessions() if s) == e, f"sessions {expected} on the workers")
    assert sessions() == [1, 1], "each worker holds one call (capacity 1 each)"

    supervisor.send_signal(signal.SIGTERM)
    wait_for(lambda: all(n.draining for n in transceivers(etcd.url)), "both workers draining", 10.0)
    for call in calls:
        out, err = call.communicate(timeout=60)
        report = json.loads(out.decode().strip().splitlines()[-1])
        # The call was carried to its end and echoed (its audio's likeness to the clip is test_processes' job:
        # two calls on a loaded machine can lose it to timing alone).
        assert report["session_id"] and report["packets_received"] > 100, (report, err.decode())
    assert supervisor.wait(timeout=60) == 0
    logs = [json.loads(line) for line in supervisor.stderr.read().decode().splitlines() if line.startswith("{")]
    ended = [line for line in logs if line["msg"] == "session ended"]
    # The API serves until the drain ends: each call's DELETE reached the worker that owns it.
    assert sorted(line["reason"] for line in ended) == ["deleted", "deleted"], ended
    assert sum(line["msg"] == "shutting down" for line in logs) == 2
    assert transceivers(etcd.url) == []


def test_workers_do_not_outlive_a_killed_supervisor(processes) -> None:
    supervisor = processes("transceiver", "--workers", "2", "--registry", "memory://workers", "--http", "127.0.0.1:0",
                           "--agent", "", env={"VOICEMESH_TOKEN_KEYS": f"1:{secrets.token_hex(32)}"})
    workers = wait_for(lambda: len(found := children(supervisor.pid)) == 2 and found, "two workers")
    supervisor.kill()
    supervisor.wait()
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), "the workers to exit")


def test_a_worker_that_cannot_start_is_given_up_on_and_the_supervisor_exits_non_zero(processes) -> None:
    """Worker 0's API address is taken (a setting every restart meets again): it exits 1 before it is ready.
    The supervisor restarts it with back-off, gives up after the third failed start, drains worker 1 (which
    started) and exits 1, instead of restarting worker 0 forever."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        supervisor = processes("transceiver", "--workers", "2", "--registry", "memory://workers",
                               "--http", f"127.0.0.1:{port}", "--agent", "",
                               env={"VOICEMESH_TOKEN_KEYS": f"1:{secrets.token_hex(32)}"})
        try:
            _, err = supervisor.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError("the supervisor kept restarting a worker that cannot start") from None
    stderr = err.decode()
    assert supervisor.returncode == 1, stderr[-3000:]
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    started = [line["worker"] for line in logs if line["msg"] == "worker started"]
    assert started.count(0) == 3 and started.count(1) == 1, started
    assert [line["worker"] for line in logs if line["msg"] == "worker ready"] == [1]
    gave_up = [line for line in logs if line["msg"].startswith("giving up on worker 0")]
    assert len(gave_up) == 1 and "3 times in a row" in gave_up[0]["msg"], gave_up
    assert sum(line["msg"] == "shutting down" for line in logs) == 1, "worker 1 drained"
