"""The agent SDK and the agent bridge's events and failure modes, over real gRPC on loopback: events
keep their place among frames both ways, the README's example agent handles a real call, and an
agent that breaks (raises, sends garbage, dies mid-call) ends the session with a clear reason."""

import asyncio
import logging
import re
from pathlib import Path

import grpc
import pytest

from voicemesh.agent import sdk
from voicemesh.agent.v1 import agent_pb2, agent_pb2_grpc
from voicemesh.app import audio
from voicemesh.app.client import RATE, call
from voicemesh.app.demo import LOOPBACK, bundled_speech, embedded_mesh

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parent.parent / "README.md"
DEADLINE_S = 20.0


async def wait_until(predicate, deadline_s=DEADLINE_S):
    """Poll predicate() every 10 ms until it is true; fail after deadline_s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not predicate():
        assert loop.time() < end, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


class Recorder:
    """What the transceiver side of one session got: ("frame", payload), ("event", kind), ("end", reason)."""

    def __init__(self):
        self.got = []

    def open(self, link, name="s", codec=agent_pb2.CODEC_OPUS, sample_rate_hz=48000):
        return link.open_session(
            name, codec=codec, sample_rate_hz=sample_rate_hz,
            on_frame=lambda payload, _ts: self.got.append(("frame", payload)),
            on_event=lambda event, _ts: self.got.append(("event", event)),
            on_end=lambda reason: self.got.append(("end", reason)),
        )


class Answerer(sdk.Agent):
    """Keeps what each session heard; answers each EVENT_SPEECH_STOPPED with a 3-frame response."""

    def __init__(self):
        super().__init__()
        self.heard = []
        self.sessions = []

    async def on_session(self, session):
        self.sessions.append(session)
        async for item in session:
            if isinstance(item, agent_pb2.AudioFrame):
                self.heard.append(("frame", item.payload))
                continue
            self.heard.append(("event", item.event))
            if item.event == agent_pb2.EVENT_SPEECH_STOPPED:
                session.response_started()
                for n in range(3):
                    await session.send_audio(b"answer%d" % n)
                session.response_done()


@pytest.fixture
async def serve_agent():
    servers = []

    async def start(agent):
        server, port = await sdk.serve(agent)
        servers.append(server)
        return port

    yield start
    for server in servers:
        await server.stop(None)


@pytest.fixture
async def link(links):
    async def start(port, **options):
        agent_link = await links(port, **options)
        await wait_until(lambda: agent_link.connected)
        return agent_link

    return start


async def test_events_keep_their_place_among_frames_both_ways(serve_agent, link):
    agent = Answerer()
    agent_link = await link(await serve_agent(agent))
    recorder = Recorder()
    session = recorder.open(agent_link)
    session.send(b"f0", 0)
    session.send(b"f1", 960)
    session.send_event(agent_pb2.EVENT_SPEECH_STARTED, 960)
    session.send(b"f2", 1920)
    session.send_event(agent_pb2.EVENT_SPEECH_STOPPED, 2880)
    session.send(b"f3", 2880)
    await wait_until(lambda: ("event", agent_pb2.EVENT_RESPONSE_DONE) in recorder.got)
    assert agent.heard == [
        ("frame", b"f0"), ("frame", b"f1"), ("event", agent_pb2.EVENT_SPEECH_STARTED),
        ("frame", b"f2"), ("event", agent_pb2.EVENT_SPEECH_STOPPED), ("frame", b"f3"),
    ]
    assert recorder.got == [
        ("event", agent_pb2.EVENT_RESPONSE_STARTED),
        ("frame", b"answer0"), ("frame", b"answer1"), ("frame", b"answer2"),
        ("event", agent_pb2.EVENT_RESPONSE_DONE),
    ]
    start = agent.sessions[0].start
    assert (start.session_id, start.codec, start.frame_ms) == ("s", agent_pb2.CODEC_OPUS, 20)
    session.close("hangup")
    await wait_until(lambda: agent.sessions[0].ended)
    assert agent.sessions[0].end_reason == "hangup"


async def test_downlinks_are_batched_but_a_sessions_first_frame_goes_at_once(serve_agent, link):
    """Agent.batch_ms: frames sent in different loop iterations within the interval share one Downlink;
    a session's first frame does not wait for it. The interval here is a minute, so without the first-frame
    rule the second session's first frame would not arrive, and without the batching a, b and c would be
    three Downlinks."""

    class Speaker(sdk.Agent):
        batch_ms = 60_000.0

        async def on_session(self, session):
            await session.send_audio(b"first")
            async for item in session:
                if item.payload == b"stop":
                    return
                for payload in (b"a", b"b", b"c"):
                    await session.send_audio(payload)
                    await asyncio.sleep(0)

    agent_link = await link(await serve_agent(Speaker()))
    recorder, other = Recorder(), Recorder()
    session = recorder.open(agent_link)
    await wait_until(lambda: ("frame", b"first") in recorder.got)
    other.open(agent_link, "other")  # its first frame comes right after a Downlink, well within the minute
    await wait_until(lambda: ("frame", b"first") in other.got)
    before = agent_link.downlink_messages
    session.send(b"go", 0)
    session.send(b"stop", 960)
    await wait_until(lambda: ("end", "agent_done") in recorder.got)
    assert recorder.got == [("frame", b"first"), ("frame", b"a"), ("frame", b"b"), ("frame", b"c"),
                            ("end", "agent_done")]
    assert agent_link.downlink_messages - before == 1


async def test_returning_or_raising_in_on_session_hangs_up(serve_agent, link):
    class OneFrame(sdk.Agent):
        async def on_session(self, session):
            async for item in session:
                if session.start.session_id == "raises":
                    raise RuntimeError("the agent broke")
                await session.send_audio(item.payload)
                return

    agent_link = await link(await serve_agent(OneFrame()))
    done, broken = Recorder(), Recorder()
    done.open(agent_link, "done").send(b"hello", 0)
    broken.open(agent_link, "raises").send(b"hello", 0)
    await wait_until(lambda: done.got[-1:] == [("end", "agent_done")] and broken.got)
    assert done.got == [("frame", b"hello"), ("end", "agent_done")]
    assert broken.got == [("end", "agent_error")]


class Garbage(agent_pb2_grpc.AgentServicer):
    """Answers every SessionStart with frames and events that name no session or are not an agent's to send."""

    async def Connect(self, request_iterator, context):
        async for uplink in request_iterator:
            for start in uplink.starts:
                yield agent_pb2.Downlink(
                    frames=[agent_pb2.AudioFrame(stream_id=start.stream_id + 1000, payload=b"x")],
                    events=[
                        agent_pb2.SessionEvent(stream_id=start.stream_id + 1000, event=agent_pb2.EVENT_RESPONSE_STARTED),
                        agent_pb2.SessionEvent(stream_id=start.stream_id, event=agent_pb2.EVENT_SPEECH_STARTED),
                        agent_pb2.SessionEvent(stream_id=start.stream_id, event=99),
                    ],
                )
                yield agent_pb2.Downlink(frames=[agent_pb2.AudioFrame(stream_id=start.stream_id, payload=b"ok")])


async def test_frames_and_events_that_name_no_session_or_the_wrong_direction_are_counted_and_dropped(
        serve_agent, link):
    agent_link = await link(await serve_agent(Garbage()))
    recorder = Recorder()
    recorder.open(agent_link)
    await wait_until(lambda: recorder.got)
    assert recorder.got == [("frame", b"ok")]
    assert agent_link.dropped_downlink_frames == 1
    assert agent_link.dropped_downlink_events == 3


async def test_the_sdk_counts_and_drops_what_names_no_session(serve_agent):
    agent = Answerer()
    port = await serve_agent(agent)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = agent_pb2_grpc.AgentStub(channel).Connect()
        await stream.write(agent_pb2.Uplink(
            starts=[agent_pb2.SessionStart(stream_id=1, session_id="s", codec=agent_pb2.CODEC_OPUS,
                                           sample_rate_hz=48000, frame_ms=20)],
            frames=[agent_pb2.AudioFrame(stream_id=2, payload=b"x")],
            events=[agent_pb2.SessionEvent(stream_id=1, event=agent_pb2.EVENT_RESPONSE_DONE),
                    agent_pb2.SessionEvent(stream_id=2, event=agent_pb2.EVENT_SPEECH_STARTED)],
        ))
        await stream.done_writing()
        assert [downlink async for downlink in stream] == []
    assert (agent.dropped_frames, agent.dropped_events) == (1, 2)
    assert agent.sessions[0].end_reason == "stream_closed"


async def test_an_agent_that_answers_bytes_that_do_not_parse_ends_its_sessions(link, caplog):
    async def garbage(request_iterator, context):
        async for _ in request_iterator:
            yield b"\xff\xff\xff\xff not a Downlink"

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "voicemesh.agent.v1.Agent", {"Connect": grpc.stream_stream_rpc_method_handler(garbage)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        agent_link = await link(port, give_up_s=0.5)
        recorder = Recorder()
        recorder.open(agent_link)
        await wait_until(lambda: recorder.got)
        assert recorder.got == [("end", "agent_unavailable")]
        assert not [r for r in caplog.records if r.name == "voicemesh.runtime.tasks"], "the link keeps retrying"
    finally:
        await server.stop(None)


def readme_agent() -> type[sdk.Agent]:
    """The agent class defined by the Python block of the README's "Writing an agent" section."""
    section = README.read_text().split("## Writing an agent", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    (agent,) = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, sdk.Agent) and v is not sdk.Agent]
    return agent


@pytest.mark.parametrize("codec", ["opus", "pcm16"])
async def test_the_readme_example_agent_handles_a_call(codec):
    async with embedded_mesh(agent=readme_agent()(), agent_codec=codec) as mesh:
        report = await call(mesh.whip_url, bundled_speech(), bind=LOOPBACK)
    assert report.ok, report.error
    assert report.correlation > 0.5


class DiesMidCall(agent_pb2_grpc.AgentServicer):
    """Echoes 25 frames (0.5 s), then fails its stream, and every stream after that: an agent that died."""

    def __init__(self):
        self.echoed = 0

    async def Connect(self, request_iterator, context):
        async for uplink in request_iterator:
            if self.echoed >= 25:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the agent died")
            self.echoed += len(uplink.frames)
            if uplink.frames:
                yield agent_pb2.Downlink(frames=uplink.frames)


async def test_an_agent_that_dies_mid_call_ends_the_session_with_agent_unavailable(tmp_path, caplog):
    clip = tmp_path / "short.wav"
    audio.write_wav(str(clip), audio.load_wav_mono(bundled_speech(), RATE)[: 2 * RATE], RATE)
    agent = DiesMidCall()
    caplog.set_level(logging.INFO, logger="voicemesh.transceiver")
    async with embedded_mesh(agent=agent) as mesh:
        mesh.transceiver.agent_link.give_up_s = 0.5
        # Once the session ends no audio flows, so the call runs into its timeout: keep that short.
        report = await call(mesh.whip_url, str(clip), bind=LOOPBACK, timeout_s=5.0)
        await wait_until(lambda: not mesh.transceiver.sessions)
    assert report.session_id
    assert agent.echoed >= 25
    ended = [r for r in caplog.records if r.getMessage() == "session ended" and r.session_id == report.session_id]
    assert [r.reason for r in ended] == ["agent:agent_unavailable"]
