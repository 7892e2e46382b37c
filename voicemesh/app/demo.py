"""The quick start: a whole mesh in one process on loopback, and one real call through it.

Starts an in-memory registry, the echo agent (over real gRPC), one
transceiver and one edge, then places a call with the bundled speech through
the edge's WHIP front and relay, and reports what came back.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from voicemesh.agent.v1.agent_pb2_grpc import AgentServicer
from voicemesh.app.audio import bundled_speech
from voicemesh.app.client import CallReport, call
from voicemesh.core import api, echo_agent
from voicemesh.core.config import TransceiverConfig
from voicemesh.core.transceiver import Transceiver
from voicemesh.edge.config import EdgeConfig
from voicemesh.edge.node import EdgeNode
from voicemesh.edge.relay import Relay
from voicemesh.registry import open_registry
from voicemesh.wire.hopauth import HopVerifier
from voicemesh.wire.meshkeys import MeshKeys
from voicemesh.wire.token import TokenCodec

LOOPBACK = "127.0.0.1"


@dataclass
class Mesh:
    """A running embedded mesh: ``whip_url`` is where callers POST offers; ``keys`` the mesh keys, ``tokens``
    the routing token codec on them, ``hop`` the transceiver API's signature verifier."""

    edge: EdgeNode
    transceiver: Transceiver
    keys: MeshKeys
    tokens: TokenCodec
    hop: HopVerifier

    @property
    def secrets_url(self) -> str:
        return f"{self.edge.url}/v1/client_secrets"

    @property
    def whip_url(self) -> str:
        return f"{self.edge.url}/v1/sessions"

    @property
    def relay(self) -> Relay:
        assert self.edge.relay is not None
        return self.edge.relay


@asynccontextmanager
async def embedded_mesh(*, agent_codec: str = "opus", capacity: int = 50, connect_timeout_s: float = 10.0,
                        advertise: str = "", agent: AgentServicer | None = None,
                        keys: MeshKeys | None = None, edge_options: dict | None = None,
                        media_path: str = "lean") -> AsyncIterator[Mesh]:
    """Run registry, agent, transceiver and edge on loopback; tear all down on exit.

    ``advertise`` is the relay address put in answers, if not the relay's own;
    ``keys`` the mesh keys (default: one random key); ``edge_options`` sets
    more EdgeConfig fields, or other addresses than loopback (``api_keys``
    turns on WHIP authorization, ``relay_tcp`` ICE-TCP).
    ``media_path`` is the transceiver's (``lean`` or ``aiortc``, core/config.py).
    ``agent`` is served instead of the echo agent (over real gRPC, like it).
    """
    registry_url = f"memory://mesh-{secrets.token_hex(4)}"
    keys = keys or MeshKeys({1: secrets.token_bytes(32)}, 1)
    tokens = TokenCodec.from_mesh_keys(keys)
    hop = HopVerifier(keys)
    async with AsyncExitStack() as stack:
        agent_server, agent_port = await echo_agent.serve(f"{LOOPBACK}:0", agent)
        stack.push_async_callback(agent_server.stop, 0.5)
        trx_registry, edge_registry = open_registry(registry_url), open_registry(registry_url)
        for registry in (trx_registry, edge_registry):
            await registry.start()
            stack.push_async_callback(registry.close)
        transceiver = Transceiver(
            TransceiverConfig(agent=f"{LOOPBACK}:{agent_port}", agent_codec=agent_codec,
                              backbone=f"{LOOPBACK}:0", capacity=capacity,
                              connect_timeout_s=connect_timeout_s, drain_timeout_s=0, media_path=media_path),
            trx_registry, tokens)
        stack.push_async_callback(transceiver.close)
        runner = await api.serve(transceiver, hop, LOOPBACK, 0)
        stack.push_async_callback(runner.cleanup)
        edge = EdgeNode(EdgeConfig(**{"public": f"{LOOPBACK}:0", "backbone": f"{LOOPBACK}:0", "http": f"{LOOPBACK}:0",
                                      "advertise": advertise, **(edge_options or {})}),
                        edge_registry, keys)
        stack.push_async_callback(edge.close)
        await edge.start()
        yield Mesh(edge, transceiver, keys, tokens, hop)


async def run(wav: str | None = None, out: str | None = None, agent_codec: str = "opus") -> tuple[CallReport, dict]:
    """Run the embedded mesh, place one call, tear everything down.

    Returns the client's report and the relay's counters (Relay.stats()).
    """
    async with embedded_mesh(agent_codec=agent_codec) as mesh:
        report = await call(mesh.whip_url, wav or bundled_speech(), out=out, bind=LOOPBACK)
        return report, mesh.relay.stats()
