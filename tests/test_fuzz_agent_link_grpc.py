"""The agent link against an agent that sends bytes that are not a Downlink, over real gRPC on loopback
(the unit fuzz test, tests/test_fuzz_agent_link.py, covers every Downlink that decodes). grpc.aio hands
the link None for a message its deserializer cannot decode (grpc/_common.py: _transform logs and
returns None), so the link must expect it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from voicemesh.agent.v1 import agent_pb2
from voicemesh.core.agent_link import AgentLink

pytestmark = pytest.mark.integration

CONNECT = "/voicemesh.agent.v1.Agent/Connect"


def garbage_agent(messages: list[bytes]) -> grpc.GenericRpcHandler:
    """An agent whose Connect answers each uplink carrying a SessionStart with ``messages``, raw bytes as
    they go on the wire (no serializer), then a valid Downlink with one frame for that session."""

    async def connect(request_iterator, context):
        async for raw in request_iterator:
            for start in agent_pb2.Uplink.FromString(raw).starts:
                for message in messages:
                    yield message
                yield agent_pb2.Downlink(frames=[agent_pb2.AudioFrame(stream_id=start.stream_id,
                                                                      payload=b"after")]).SerializeToString()

    return grpc.method_handlers_generic_handler("voicemesh.agent.v1.Agent", {
        "Connect": grpc.stream_stream_rpc_method_handler(connect)})


@pytest.mark.xfail(strict=True, reason="core/agent_link.py _run passes grpc.aio's None for an undecodable "
                   "Downlink to _on_downlink, whose AttributeError ends the link's task for good")
async def test_an_undecodable_downlink_is_dropped_and_the_link_keeps_working():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([garbage_agent([b"\xff\xff\xff", b"\x0a\x05\x08"])])
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
        while received != [b"after"] and not link._task.done():
            assert loop.time() < end, "no frame before the deadline"
            await asyncio.sleep(0.01)
        assert not link._task.done(), f"the link's task ended: {link._task.exception()!r}"
        assert received == [b"after"]
    finally:
        await link.close()
        await server.stop(None)
