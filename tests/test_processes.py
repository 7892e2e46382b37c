"""Each part as its own process against a real etcd, as an operator runs them.

`voicemesh agent`, `voicemesh transceiver` and `voicemesh edge` are started
from the command line with settings from flags, the environment and a config
file; the transceiver finds the agent through the registry; `voicemesh call` places a real call through them
with a client token the edge issued for an API key; SIGTERM shuts each down cleanly.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from procs import VOICEMESH, free_ports, wait_http

from voicemesh.app.demo import bundled_speech

pytestmark = pytest.mark.system


def test_parts_as_processes_against_etcd(etcd, processes, tmp_path: Path) -> None:
    env = {"VOICEMESH_TOKEN_KEYS": f"2:{secrets.token_hex(32)},1:{secrets.token_hex(32)}",
           "VOICEMESH_REGISTRY": etcd.url, "VOICEMESH_LOG_LEVEL": "info"}
    agent_port, trx_port, edge_port = free_ports(3)
    config = tmp_path / "voicemesh.toml"
    config.write_text('[transceiver]\nnode_id = "trx-a"\nregion = "eu-west"\nregion_id = 3\n'
                      'backbone = "127.0.0.1:0"\n\n[edge]\nnode_id = "edge-a"\nregion = "eu-west"\n')
    agent = processes("agent", "--bind", f"127.0.0.1:{agent_port}", "--region", "eu-west", env=env)
    trx = processes("transceiver", "--config", str(config), "--http", f"127.0.0.1:{trx_port}",
                    "--agent", "registry", env={**env, "VOICEMESH_CAPACITY": "7"})
    trx_status = f"http://127.0.0.1:{trx_port}/v1/status"
    assert wait_http(trx_status, trx, lambda b: b["node"] == "trx-a")["sessions"] == 0
    api_key = secrets.token_urlsafe(24)
    edge = processes("edge", "--config", str(config), "--public", "127.0.0.1:0",
                     "--http", f"127.0.0.1:{edge_port}", env={**env, "VOICEMESH_API_KEYS": f"backend:{api_key}"})
    wait_http(f"http://127.0.0.1:{edge_port}/v1/status", edge)
    issue = urllib.request.Request(f"http://127.0.0.1:{edge_port}/v1/client_secrets", data=b'{"ttl_s": 60}',
                                   headers={"Authorization": f"Bearer {api_key}"})
    with urllib.request.urlopen(issue, timeout=5) as resp:
        token = json.loads(resp.read())["value"]

    caller = subprocess.Popen(
        [*VOICEMESH, "call", f"http://127.0.0.1:{edge_port}/v1/sessions", "--wav", bundled_speech(),
         "--bind", "127.0.0.1", "--out", str(tmp_path / "echo.wav"), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "VOICEMESH_CALL_TOKEN": token})
    try:
        wait_http(trx_status, trx, lambda b: b["sessions"] == 1)  # the clip plays for about 6 s
        out, err = caller.communicate(timeout=60)
    finally:
        caller.kill()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert caller.returncode == 0, (report, err.decode())
    assert report["ok"] and report["correlation"] > 0.5 and report["packets_received"] > 100
    assert (tmp_path / "echo.wav").stat().st_size > 100_000

    edge_status = wait_http(f"http://127.0.0.1:{edge_port}/v1/status", edge)
    assert edge_status["packets_in"] >= report["packets_sent"]
    assert wait_http(trx_status, trx)["sessions"] == 0, "the caller's DELETE ended the session"

    for proc in (edge, trx, agent):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, proc.stderr.read().decode()
    edge_log = edge.stderr.read().decode()
    assert "client token issued" in edge_log and api_key not in edge_log and token not in edge_log
    logs = [json.loads(line) for line in trx.stderr.read().decode().splitlines() if line.startswith("{")]
    ended = [line for line in logs if line["msg"] == "session ended"]
    assert ended and ended[0]["session_id"] == report["session_id"] and ended[0]["reason"] == "deleted"


def test_an_edge_without_auth_refuses_to_serve_whip_off_loopback() -> None:
    env = {**os.environ, "VOICEMESH_TOKEN_KEYS": f"1:{secrets.token_hex(32)}"}
    done = subprocess.run([*VOICEMESH, "edge", "--http", "0.0.0.0:0", "--registry", "memory://x"], env=env,
                          capture_output=True, timeout=30)

    assert done.returncode == 2 and b"--insecure-open" in done.stderr


async def take_index(endpoint: str, key: str) -> None:
    """Another node's claim on registry index ``key`` (its own lease), and the holder's lease revoked: what a
    restore or a lease lost in an outage leaves."""
    from etcd3aio import Etcd3Client

    async with Etcd3Client([endpoint]) as raw:
        ours = (await raw.kv.get(key)).kvs[0].lease
        holder = await raw.lease.grant(600)
        await raw.kv.put(key, b"another-node", lease=holder.ID)
        await raw.lease.revoke(ours)


def test_an_edge_whose_index_another_node_holds_drains_and_exits_for_a_restart(etcd, processes) -> None:
    """The edge's lease is revoked while another live node claims its index (an outage in which a new host took
    it): the edge registers again, cannot get its index back within a few lease TTLs, drains and exits with
    EXIT_INDEX_LOST, so systemd (Restart=always) starts it again with a free index."""
    from voicemesh.app.cli import EXIT_INDEX_LOST

    env = {"VOICEMESH_TOKEN_KEYS": f"1:{secrets.token_hex(32)}", "VOICEMESH_REGISTRY": etcd.url}
    (edge_port,) = free_ports(1)
    edge = processes("edge", "--node-id", "edge-a", "--region", "eu-west", "--public", "127.0.0.1:0",
                     "--http", f"127.0.0.1:{edge_port}", env=env)
    wait_http(f"http://127.0.0.1:{edge_port}/v1/status", edge)
    asyncio.run(take_index(etcd.endpoint, "/voicemesh/v1/index/edge/eu-west/1"))
    try:
        status = edge.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the edge kept running on an index another node holds")
    err = edge.stderr.read().decode()
    assert status == EXIT_INDEX_LOST, err
    assert "another node holds this node's registry index" in err and "edge drained" in err


def test_a_transceiver_that_lost_its_index_keeps_its_live_call_to_the_end_then_exits(etcd, processes,
                                                                                    tmp_path: Path) -> None:
    """A call is up when another node takes the transceiver's index while its lease is gone: the transceiver
    gives the index up, drains (the live call's routing token carries the index, so it is not re-keyed) and
    exits with EXIT_INDEX_LOST only once the call has ended by itself, with its audio both ways to the end."""
    from voicemesh.app.cli import EXIT_INDEX_LOST

    env = {"VOICEMESH_TOKEN_KEYS": f"1:{secrets.token_hex(32)}", "VOICEMESH_REGISTRY": etcd.url}
    agent_port, trx_port, edge_port = free_ports(3)
    agent = processes("agent", "--bind", f"127.0.0.1:{agent_port}", "--region", "eu-west", env=env)
    trx = processes("transceiver", "--node-id", "trx-a", "--region", "eu-west", "--region-id", "3",
                    "--backbone", "127.0.0.1:0", "--http", f"127.0.0.1:{trx_port}", "--agent", "registry",
                    env={**env, "VOICEMESH_DRAIN_TIMEOUT_S": "120"})
    trx_status = f"http://127.0.0.1:{trx_port}/v1/status"
    wait_http(trx_status, trx)
    edge = processes("edge", "--node-id", "edge-a", "--region", "eu-west", "--public", "127.0.0.1:0",
                     "--http", f"127.0.0.1:{edge_port}", env=env)
    wait_http(f"http://127.0.0.1:{edge_port}/v1/status", edge)
    caller = subprocess.Popen(
        [*VOICEMESH, "call", f"http://127.0.0.1:{edge_port}/v1/sessions", "--wav", bundled_speech(),
         "--bind", "127.0.0.1", "--duration", "30", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    try:
        wait_http(trx_status, trx, lambda b: b["sessions"] == 1)
        asyncio.run(take_index(etcd.endpoint, "/voicemesh/v1/index/transceiver/eu-west/1"))
        out, err = caller.communicate(timeout=120)
        status = trx.wait(timeout=60)
    finally:
        caller.kill()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["ok"], err.decode()
    assert report["packets_received"] >= 0.9 * report["packets_sent"], "the echo went on to the call's end"
    trx_err = trx.stderr.read().decode()
    assert status == EXIT_INDEX_LOST, trx_err
    logs = [json.loads(line) for line in trx_err.splitlines() if line.startswith("{")]
    messages = [line["msg"] for line in logs]
    assert messages.index("another node holds this node's registry index: draining, then exiting to start again "
                          "with a free index") < messages.index("session ended")
    assert [line["reason"] for line in logs if line["msg"] == "session ended"] == ["deleted"], "the call ended itself"
    for proc in (edge, agent):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, proc.stderr.read().decode()
