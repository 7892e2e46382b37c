"""The built-in echo agent: a gRPC Agent servicer that plays every caller's audio back to them.

It runs in the transceiver's process for the quick start, or as its own server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from opentelemetry import trace

from voicemesh.agent import sdk
from voicemesh.agent.v1 import agent_pb2, agent_pb2_grpc
from voicemesh.runtime import telemetry


class EchoAgent(agent_pb2_grpc.AgentServicer):
    """Echoes every frame of every Uplink in one Downlink (same stream_id, seq,
    timestamp, payload), in either codec. Uplinks are already batched, so the
    echo is batched the same way. It is written on the raw stubs rather than
    voicemesh.agent.sdk (no task or queue per session), so it adds next to
    nothing to what the transceiver benchmark measures, and it shows the raw stream for agents in
    other languages. Events (agent.proto SessionEvent) are ignored.

    State per Connect stream: the known stream ids, each with its ``agent
    session`` span (a child of the transceiver's session span, by the
    SessionStart's traceparent). Frames for a stream id without a
    SessionStart on that stream are dropped and counted.
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
        known: dict[int, trace.Span] = {}
        try:
            async for uplink in request_iterator:
                self.uplink_messages += 1
                self.uplink_frames += len(uplink.frames)
                for start in uplink.starts:
                    known[start.stream_id] = telemetry.start_agent_span(start.session_id, start.traceparent, "echo")
                frames = [frame for frame in uplink.frames if frame.stream_id in known]
                self.dropped_frames += len(uplink.frames) - len(frames)
                for end in uplink.ends:
                    span = known.pop(end.stream_id, None)
                    if span is not None:
                        span.set_attribute("voicemesh.session.end_reason", end.reason)
                        span.end()
                if frames:
                    yield agent_pb2.Downlink(frames=frames)
        finally:
            for span in known.values():
                span.end()


async def serve(
    bind: str = "127.0.0.1:0", agent: agent_pb2_grpc.AgentServicer | None = None, *,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start a gRPC server with an EchoAgent (or the given servicer) on bind ("host:port", port 0 = any free port),
    over TLS with ``credentials`` (voicemesh.agent.tls.server_credentials).

    Returns the started server and its port; stop it with `await server.stop(grace)`.
    Raises RuntimeError if the address cannot be bound.
    """
    return await sdk.serve(agent or EchoAgent(), bind, credentials=credentials)
