"""AgentLink and the echo agent over real gRPC on loopback: echo, batching, reconnects, give-up, session ends."""

import asyncio
import os

import grpc
import pytest

from voicemesh.agent.v1 import agent_pb2, agent_pb2_grpc
from voicemesh.core.agent_link import AgentLink, SessionFormatError
from voicemesh.core.echo_agent import EchoAgent, serve

pytestmark = pytest.mark.integration

DEADLINE_S = 20.0


async def wait_until(predicate, deadline_s=DEADLINE_S):
    """Poll predicate() every 10 ms until it is true; fail after deadline_s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not predicate():
        assert loop.time() < end, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


async def send_until_echoed(session, call, payload, deadline_s=DEADLINE_S):
    """Send payload every 50 ms until it comes back: frames sent while a link reconnects are dropped."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not call.frames or call.frames[-1][0] != payload:
        assert loop.time() < end, "no echo before the deadline"
        session.send(payload, 0)
        await asyncio.sleep(0.05)


class RecordingAgent(EchoAgent):
    """The echo agent, also keeping every SessionStart and SessionEnd it receives."""

    def __init__(self):
        super().__init__()
        self.starts = []
        self.ends = []

    async def Connect(self, request_iterator, context):
        async for downlink in super().Connect(self._record(request_iterator), context):
            yield downlink

    async def _record(self, request_iterator):
        async for uplink in request_iterator:
            self.starts.extend(uplink.starts)
            self.ends.extend(uplink.ends)
            yield uplink


class HangUpAgent(agent_pb2_grpc.AgentServicer):
    """Answers each SessionStart with one frame for an unknown stream id and a SessionEnd("agent_done")."""

    async def Connect(self, request_iterator, context):
        async for uplink in request_iterator:
            for start in uplink.starts:
                yield agent_pb2.Downlink(
                    frames=[agent_pb2.AudioFrame(stream_id=start.stream_id + 1000, payload=b"x")],
                    ends=[agent_pb2.SessionEnd(stream_id=start.stream_id, reason="agent_done")],
                )


class Call:
    """What one session received: echoed frames and end reasons."""

    def __init__(self):
        self.frames = []
        self.ends = []

    def on_frame(self, payload, timestamp):
        self.frames.append((payload, timestamp))

    def on_end(self, reason):
        self.ends.append(reason)


@pytest.fixture
async def echo():
    agent = RecordingAgent()
    server, port = await serve("127.0.0.1:0", agent)
    yield agent, port
    await server.stop(None)


def open_call(link, name, codec=agent_pb2.CODEC_OPUS, sample_rate_hz=48000, **options):
    call = Call()
    session = link.open_session(
        name, codec=codec, sample_rate_hz=sample_rate_hz, on_frame=call.on_frame, on_end=call.on_end, **options
    )
    return session, call


@pytest.mark.parametrize(
    ("codec", "sample_rate_hz", "frame_bytes", "samples_per_frame"),
    [(agent_pb2.CODEC_OPUS, 48000, 160, 960), (agent_pb2.CODEC_PCM16, 16000, 640, 320)],
)
async def test_echo_round_trip_50_sessions(echo, links, codec, sample_rate_hz, frame_bytes, samples_per_frame):
    agent, port = echo
    link = await links(port)
    await wait_until(lambda: link.connected)
    calls = [open_call(link, f"s{n}", codec, sample_rate_hz) for n in range(50)]
    sent = {session.stream_id: [] for session, _ in calls}
    for i in range(20):
        for session, _ in calls:
            frame = (os.urandom(frame_bytes), i * samples_per_frame)
            sent[session.stream_id].append(frame)
            session.send(*frame)
        await asyncio.sleep(0.002)
    await wait_until(lambda: all(len(call.frames) == 20 for _, call in calls))
    for session, call in calls:
        assert call.frames == sent[session.stream_id]
        assert call.ends == []
    assert {start.codec for start in agent.starts} == {codec}
    assert {start.sample_rate_hz for start in agent.starts} == {sample_rate_hz}
    assert link.dropped_frames == link.dropped_downlink_frames == agent.dropped_frames == 0


@pytest.mark.parametrize("batch_ms", [0, 20])
async def test_frames_sent_within_one_batch_window_share_messages(echo, links, batch_ms):
    agent, port = echo
    link = await links(port, batch_ms=batch_ms)
    await wait_until(lambda: link.connected)
    calls = [open_call(link, f"s{n}") for n in range(50)]
    for i in range(10):
        for session, _ in calls:
            session.send(b"opus", i * 960)
    await wait_until(lambda: all(len(call.frames) == 10 for _, call in calls))
    assert agent.uplink_frames == 500
    assert agent.uplink_messages == link.uplink_messages
    assert agent.uplink_messages * 100 <= agent.uplink_frames


async def test_batches_across_loop_iterations(echo, links):
    agent, port = echo
    link = await links(port, batch_ms=20)
    await wait_until(lambda: link.connected)
    calls = [open_call(link, f"s{n}") for n in range(50)]
    for i in range(10):
        for session, _ in calls:
            session.send(b"opus", i * 960)
            await asyncio.sleep(0)
    await wait_until(lambda: all(len(call.frames) == 10 for _, call in calls))
    assert agent.uplink_frames == 500
    assert agent.uplink_messages * 10 <= agent.uplink_frames


async def test_a_sessions_first_frame_does_not_wait_for_the_batch_interval(echo, links):
    _, port = echo
    link = await links(port, batch_ms=600_000)
    await wait_until(lambda: link.connected)
    first, first_call = open_call(link, "first")
    first.send(b"opus", 0)
    await wait_until(lambda: first_call.frames)
    second, second_call = open_call(link, "second")
    second.send(b"opus", 0)
    await wait_until(lambda: second_call.frames)


async def test_queue_overflow_drops_the_oldest_frames(echo, links):
    _, port = echo
    link = await links(port, queue_limit=10)
    await wait_until(lambda: link.connected)
    session, call = open_call(link, "s")
    for i in range(100):
        session.send(bytes([i]), i * 960)
    await wait_until(lambda: len(call.frames) == 10)
    assert link.dropped_frames == 90
    assert call.frames == [(bytes([i]), i * 960) for i in range(90, 100)]


async def test_session_end_from_the_transceiver(echo, links):
    agent, port = echo
    link = await links(port)
    await wait_until(lambda: link.connected)
    ended, ended_call = open_call(
        link, "a", agent_pb2.CODEC_PCM16, 24000, metadata={"region": "eu"}, traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    )
    live, live_call = open_call(link, "b")
    ended.close("hangup")
    ended.send(b"late", 0)
    live.send(b"hello", 0)
    await wait_until(lambda: live_call.frames and agent.ends)
    assert [(end.stream_id, end.reason) for end in agent.ends] == [(ended.stream_id, "hangup")]
    start = next(start for start in agent.starts if start.stream_id == ended.stream_id)
    assert (start.session_id, start.codec, start.sample_rate_hz, start.channels, start.frame_ms) == (
        "a", agent_pb2.CODEC_PCM16, 24000, 1, 20
    )
    assert dict(start.metadata) == {"region": "eu"} and start.traceparent.startswith("00-111")
    assert ended_call.frames == ended_call.ends == []
    assert agent.uplink_frames == 1


async def test_session_end_from_the_agent(links):
    server, port = await serve("127.0.0.1:0", HangUpAgent())
    try:
        link = await links(port)
        session, call = open_call(link, "s")
        await wait_until(lambda: call.ends)
        assert call.ends == ["agent_done"] and session.closed
        assert link.dropped_downlink_frames == 1
        session.send(b"after", 0)
        session.close("hangup")
    finally:
        await server.stop(None)


async def test_reconnects_after_the_agent_restarts(links):
    server, port = await serve("127.0.0.1:0")
    restarted = RecordingAgent()
    try:
        link = await links(port, give_up_s=60)
        await wait_until(lambda: link.connected)
        session, call = open_call(link, "s")
        session.send(b"before", 0)
        await wait_until(lambda: call.frames)

        await server.stop(None)
        await wait_until(lambda: not link.connected)
        server, _ = await serve(f"127.0.0.1:{port}", restarted)
        await wait_until(lambda: link.connected)
        await send_until_echoed(session, call, b"after")
    finally:
        await server.stop(None)
    assert [start.session_id for start in restarted.starts] == ["s"]
    assert [start.resumed for start in restarted.starts] == [True], "the restarted agent is told the call resumed"
    assert restarted.dropped_frames == 0
    assert call.ends == []


async def test_a_new_session_is_not_marked_resumed(echo, links):
    agent, port = echo
    link = await links(port)
    session, call = open_call(link, "new")
    await send_until_echoed(session, call, b"x")
    assert [(start.session_id, start.resumed) for start in agent.starts] == [("new", False)]


async def test_a_resolving_target_is_told_which_agent_failed_and_sessions_move_to_another():
    first, second = RecordingAgent(), RecordingAgent()
    first_server, first_port = await serve("127.0.0.1:0", first)
    second_server, second_port = await serve("127.0.0.1:0", second)
    targets = [f"127.0.0.1:{first_port}", f"127.0.0.1:{second_port}"]
    asked = []

    def resolve(unreachable):  # as the transceiver's registry picker: the current agent unless it failed
        asked.append(unreachable)
        return next(t for t in targets if t not in unreachable)

    link = AgentLink(resolve, give_up_s=60)
    await link.start()
    try:
        session, call = open_call(link, "s")
        await send_until_echoed(session, call, b"before")
        await first_server.stop(None)  # the first agent dies; its record would outlive it by a lease TTL
        await send_until_echoed(session, call, b"after")
    finally:
        await link.close()
        await second_server.stop(None)
    assert link.target == targets[1]
    assert targets[0] in asked[-1]
    assert [(start.session_id, start.resumed) for start in second.starts] == [("s", True)]
    assert call.ends == []


async def test_sessions_end_when_the_agent_is_down_longer_than_give_up(links):
    server, port = await serve("127.0.0.1:0")
    link = await links(port, give_up_s=0.5)
    await wait_until(lambda: link.connected)
    calls = [open_call(link, f"s{n}") for n in range(3)]
    await server.stop(None)
    await wait_until(lambda: all(call.ends for _, call in calls))
    assert [call.ends for _, call in calls] == [["agent_unavailable"]] * 3

    late, late_call = open_call(link, "late")
    await wait_until(lambda: late_call.ends)
    assert late_call.ends == ["agent_unavailable"] and late.closed

    server, _ = await serve(f"127.0.0.1:{port}")
    try:
        await wait_until(lambda: link.connected)
        session, call = open_call(link, "after")
        await send_until_echoed(session, call, b"back")
        assert call.ends == []
    finally:
        await server.stop(None)


async def test_open_session_rejects_formats_the_protocol_cannot_carry():
    link = AgentLink("127.0.0.1:1")
    with pytest.raises(SessionFormatError) as error:
        open_call(link, "s", agent_pb2.CODEC_OPUS, 16000)
    assert error.value.reason == "sample_rate"
    with pytest.raises(SessionFormatError) as error:
        open_call(link, "s", agent_pb2.CODEC_UNSPECIFIED, 16000)
    assert error.value.reason == "codec"


async def test_echo_agent_drops_frames_of_unknown_streams(echo):
    agent, port = echo
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = agent_pb2_grpc.AgentStub(channel).Connect()
        frame = agent_pb2.AudioFrame(stream_id=7, seq=1, timestamp=960, payload=b"opus")
        await call.write(agent_pb2.Uplink(frames=[frame]))
        await call.write(
            agent_pb2.Uplink(
                starts=[agent_pb2.SessionStart(stream_id=7, codec=agent_pb2.CODEC_OPUS, sample_rate_hz=48000)],
                frames=[frame],
                ends=[agent_pb2.SessionEnd(stream_id=7, reason="hangup")],
            )
        )
        await call.write(agent_pb2.Uplink(frames=[frame]))
        await call.done_writing()
        downlinks = [downlink async for downlink in call]
    assert [list(downlink.frames) for downlink in downlinks] == [[frame]]
    assert (agent.uplink_messages, agent.uplink_frames, agent.dropped_frames) == (3, 3, 2)
