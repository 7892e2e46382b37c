"""The agent link against an agent that sends bytes that are not a Downlink, over real gRPC on loopback
(the unit fuzz test, tests/test_fuzz_agent_link.py, covers every Downlink that decodes). grpc.aio hands
the link None for a message its deserializer cannot decode (it logs and returns None), so the link ends
that stream and reconnects; its sessions carry on on the next stream."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicemesh.agent.v1 import agent_pb2
from voicemesh.core.agent_link import AgentLink

pytestmark = pytest.mark.integration


def agent(garbage: list[bytes], connects: list[int]) -> grpc.GenericRpcHandler:
    """An agent whose first Connect answers the first SessionStart with ``garbage`` (raw bytes as they go
    on the wire, no serializer) and whose later Connects answer it with one frame for that session."""

    async def connect(request_iterator, context):
        connects.append(1)
        first = len(connects) == 1
        async for raw in request_iterator:
            for start in agent_pb2.Uplink.FromString(raw).starts:
                for message in garbage if first else []:
                    yield message
                yield agent_pb2.Downlink(frames=[agent_pb2.AudioFrame(stream_id=start.stream_id,
                                                                      payload=b"after")]).SerializeToString()

    return grpc.method_handlers_generic_handler("voicemesh.agent.v1.Agent", {
        "Connect": grpc.stream_stream_rpc_method_handler(connect)})


def not_a_downlink(data: bytes) -> bool:
    try:
        agent_pb2.Downlink.FromString(data)
    except Exception:  # protobuf's DecodeError, as grpc's deserializer sees it
        return True
    return False


@settings(max_examples=5, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=1, max_size=30).filter(not_a_downlink), min_size=1, max_size=3))
async def test_an_undecodable_downlink_ends_the_stream_and_the_link_carries_on(garbage):
    connects: list[int] = []
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([agent(garbage, connects)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    link = AgentLink(f"127.0.0.1:{port}", give_up_s=30.0)
    received: list[bytes] = []
    try:
        await link.start()
        link.open_session("s1", codec=agent_pb2.CODEC_OPUS, sample_rate_hz=48000,
                          on_frame=lambda payload, timestamp: received.append(payload), on_end=lambda reason: None)
        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while not received:
            assert loop.time() < end, "no frame before the deadline"
            await asyncio.sleep(0.01)
        assert received == [b"after"] and len(connects) == 2  # the garbage's stream ended; the next one worked
    finally:
        await link.close()
        await server.stop(None)
