"""The built-in echo agent: a gRPC Agent servicer that plays every caller's audio back to them.

It runs in the transceiver's process for the quick start, or as its own server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from voicemesh.agent import sdk
from voicemesh.agent.v1 import agent_pb2, agent_pb2_grpc


class EchoAgent(agent_pb2_grpc.AgentServicer):
    """Echoes every frame of every Uplink in one Downlink (same stream_id, seq,
    timestamp, payload), in either codec. Uplinks are already batched, so the
    echo is batched the same way. It is written on the raw stubs rather than
    voicemesh.agent.sdk (no task or queue per session), so it costs next to
    nothing in the benchmarks, and it shows the raw stream for agents in
    other languages. Events (agent.proto SessionEvent) are ignored.

    State per Connect stream: the set of known stream ids. Frames for a stream
    id without a SessionStart on that stream are dropped and counted.
    Counters (over all streams): uplink_messages, uplink_frames (received),
    dropped_frames (unknown stream id).
    """

    def __init__(self) -> None:
        self.uplink_messages = 0
        self.uplink_frames = 0
        self.dropped_frames = 0

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.Uplink], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.Downlink]:
        """One Connect stream: a Downlink per Uplink that carries frames of known sessions."""
        known: set[int] = set()
        async for uplink in request_iterator:
            self.uplink_messages += 1
            self.uplink_frames += len(uplink.frames)
            known.update(start.stream_id for start in uplink.starts)
            frames = [frame for frame in uplink.frames if frame.stream_id in known]
            self.dropped_frames += len(uplink.frames) - len(frames)
            known.difference_update(end.stream_id for end in uplink.ends)
            if frames:
                yield agent_pb2.Downlink(frames=frames)


async def serve(
    bind: str = "127.0.0.1:0", agent: agent_pb2_grpc.AgentServicer | None = None
) -> tuple[grpc.aio.Server, int]:
    """Start a gRPC server with an EchoAgent (or the given servicer) on bind ("host:port", port 0 = any free port).

    Returns the started server and its port; stop it with `await server.stop(grace)`.
    Raises RuntimeError if the address cannot be bound.
    """
    return await sdk.serve(agent or EchoAgent(), bind)
