"""Fuzzing the agent link's downlink handling (voicemesh/core/agent_link.py) with hypothesis: whatever
Downlink messages an agent sends (any stream ids, event kinds, payloads and reasons, and messages decoded
from arbitrary bytes), the link never raises, delivers to open sessions only what is theirs, and counts
the rest. A session whose callbacks raise disturbs no other. No sockets: the link is never started, and
each message goes to the handler its stream loop calls (AgentLink._on_downlink)."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from voicemesh.agent.v1 import agent_pb2
from voicemesh.core.agent_link import AGENT_EVENTS, AgentLink

pytestmark = pytest.mark.unit

stream_ids = st.one_of(st.integers(1, 5), st.integers(0, 2**32 - 1))
frames = st.builds(agent_pb2.AudioFrame, stream_id=stream_ids, seq=st.integers(0, 2**32 - 1),
                   timestamp=st.integers(0, 2**64 - 1), payload=st.binary(max_size=40))
events = st.builds(agent_pb2.SessionEvent, stream_id=stream_ids,
                   event=st.one_of(st.sampled_from(sorted(agent_pb2.Event.values())), st.integers(-2**31, 2**31 - 1)),
                   timestamp=st.integers(0, 2**64 - 1))
ends = st.builds(agent_pb2.SessionEnd, stream_id=stream_ids, reason=st.text(max_size=20))
built = st.builds(agent_pb2.Downlink, frames=st.lists(frames, max_size=6), events=st.lists(events, max_size=4),
                  ends=st.lists(ends, max_size=3))


def decoded(data: bytes) -> agent_pb2.Downlink:
    """Bytes as gRPC's deserializer would turn them into a Downlink (empty if they are not one)."""
    try:
        return agent_pb2.Downlink.FromString(data)
    except DecodeError:
        return agent_pb2.Downlink()


downlinks = st.lists(st.one_of(built, st.binary(max_size=60).map(decoded),
                               built.map(lambda d: d.SerializeToString()).flatmap(
                                   lambda wire: st.binary(max_size=4).map(lambda junk: decoded(wire + junk)))),
                     min_size=1, max_size=5)


class Session:
    """What one session's callbacks received; ``fail`` makes every callback raise after recording."""

    def __init__(self, fail: bool = False) -> None:
        self.frames: list[tuple[bytes, int]] = []
        self.events: list[tuple[int, int]] = []
        self.ends: list[str] = []
        self.fail = fail

    def on_frame(self, payload: bytes, timestamp: int) -> None:
        self.frames.append((payload, timestamp))
        if self.fail:
            raise RuntimeError("on_frame failed")

    def on_event(self, event: int, timestamp: int) -> None:
        self.events.append((event, timestamp))
        if self.fail:
            raise RuntimeError("on_event failed")

    def on_end(self, reason: str) -> None:
        self.ends.append(reason)
        if self.fail:
            raise RuntimeError("on_end failed")


@given(downlinks)
def test_any_downlink_reaches_only_open_sessions_and_the_rest_is_counted(messages):
    link = AgentLink("127.0.0.1:1")
    sessions: dict[int, tuple[Session, bool]] = {}
    opened = []
    for fail, with_events in [(False, True), (False, False), (True, True), (False, True)]:
        record = Session(fail)
        session = link.open_session(f"s{len(sessions)}", codec=agent_pb2.CODEC_OPUS, sample_rate_hz=48000,
                                    on_frame=record.on_frame, on_end=record.on_end,
                                    on_event=record.on_event if with_events else None)
        sessions[session.stream_id] = (record, with_events)
        opened.append(session)
    opened[3].close("hangup")  # stream 4 is closed before the agent speaks
    open_ids = {1, 2, 3}
    expected = {stream_id: Session() for stream_id in sessions}
    dropped_frames = dropped_events = 0
    for message in messages:
        link._on_downlink(message)
        for frame in message.frames:
            if frame.stream_id in open_ids:
                expected[frame.stream_id].frames.append((frame.payload, frame.timestamp))
            else:
                dropped_frames += 1
        for event in message.events:
            if event.stream_id in open_ids and sessions[event.stream_id][1] and event.event in AGENT_EVENTS:
                expected[event.stream_id].events.append((event.event, event.timestamp))
            else:
                dropped_events += 1
        for end in message.ends:
            if end.stream_id in open_ids:
                expected[end.stream_id].ends.append(end.reason)
                open_ids.discard(end.stream_id)
    for stream_id, (record, _) in sessions.items():
        assert (record.frames, record.events, record.ends) == (
            expected[stream_id].frames, expected[stream_id].events, expected[stream_id].ends)
    assert (link.dropped_downlink_frames, link.dropped_downlink_events) == (dropped_frames, dropped_events)
    assert set(link._sessions) == open_ids and link.downlink_messages == len(messages)
