"""The quick start: a whole mesh in one process on loopback, and one real call through it.

Starts an in-memory registry, the echo agent (over real gRPC), one
transceiver and one edge, then places a call with the bundled speech through
the edge's WHIP front and relay, and reports what came back.
"""

from __future__ import annotations

import secrets
from importlib import resources

from core import api, echo_agent
from core.transceiver import Transceiver, TransceiverConfig
from edge.node import EdgeConfig, EdgeNode
from edge.token import TokenCodec
from registry import open_registry
from voicemesh.client import CallReport, call

LOOPBACK = "127.0.0.1"


def bundled_speech() -> str:
    """Path of the speech WAV shipped in the package (voicemesh/assets/speech.wav)."""
    return str(resources.files("voicemesh") / "assets" / "speech.wav")


async def run(wav: str | None = None, out: str | None = None, agent_codec: str = "opus") -> tuple[CallReport, dict]:
    """Run the embedded mesh, place one call, tear everything down.

    Returns the client's report and the relay's counters (Relay.stats()).
    """
    registry_url = f"memory://demo-{secrets.token_hex(4)}"
    tokens = TokenCodec({1: secrets.token_bytes(32)}, 1)
    agent_server, agent_port = await echo_agent.serve(f"{LOOPBACK}:0")
    trx_registry, edge_registry = open_registry(registry_url), open_registry(registry_url)
    await trx_registry.start()
    await edge_registry.start()
    transceiver = Transceiver(
        TransceiverConfig(agent=f"{LOOPBACK}:{agent_port}", agent_codec=agent_codec, backbone=f"{LOOPBACK}:0"),
        trx_registry, tokens)
    edge = EdgeNode(EdgeConfig(public=f"{LOOPBACK}:0", backbone=f"{LOOPBACK}:0", http=f"{LOOPBACK}:0"),
                    edge_registry, tokens)
    runner = None
    try:
        runner = await api.serve(transceiver, LOOPBACK, 0)
        await edge.start()
        report = await call(f"{edge.url}/v1/sessions", wav or bundled_speech(), out=out, bind=LOOPBACK)
        assert edge.relay is not None
        return report, edge.relay.stats()
    finally:
        await edge.close()
        await transceiver.close()
        if runner is not None:
            await runner.cleanup()
        await edge_registry.close()
        await trx_registry.close()
        await agent_server.stop(0.5)
