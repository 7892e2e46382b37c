"""Transceiver side of the agent bridge: one gRPC Connect stream per agent endpoint,
carrying many sessions' audio and events both ways in batched messages (proto/voicemesh/agent/v1/agent.proto)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from voicemesh.agent.v1 import agent_pb2, agent_pb2_grpc
from voicemesh.runtime.tasks import spawn

logger = logging.getLogger("voicemesh.agent")

FRAME_MS = 20
OPUS_CLOCK_HZ = 48000
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 2.0
HEALTHY_AFTER_S = 2.0
RECONNECT_MAX_S = 0.2
"""The longest gRPC waits between connection attempts to a target that refused or dropped us: a restarted
agent is connected to within about this much of listening again (attempts to a closed port cost little)."""
UNREACHABLE_S = 10.0
"""How long a target whose stream failed is reported unreachable to the resolver (registry agents: the
resolver picks another while the dead one's record waits out its lease)."""
MAX_UPLINK_PAYLOAD_BYTES = 1 << 20
AGENT_EVENTS = frozenset({agent_pb2.EVENT_RESPONSE_STARTED, agent_pb2.EVENT_RESPONSE_DONE})
"""The SessionEvent kinds an agent may send; others are counted and dropped."""

# gRPC's own reconnect backoff (1 s doubling to 120 s by default) would hide a
# restarted agent from us; the channel retries every RECONNECT_MAX_S at most, and
# _pause returns as soon as it is connected again.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", int(BACKOFF_MIN_S * 1000)),
    ("grpc.min_reconnect_backoff_ms", int(BACKOFF_MIN_S * 1000)),
    ("grpc.max_reconnect_backoff_ms", int(RECONNECT_MAX_S * 1000)),
]


class SessionFormatError(ValueError):
    """An open_session() format the agent protocol cannot carry; `reason` is "codec" or "sample_rate"."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AgentSession:
    """One session on an AgentLink, named on the stream by `stream_id`.

    Created by AgentLink.open_session(); use it from the event loop's thread.
    """

    def __init__(
        self,
        link: AgentLink,
        start: agent_pb2.SessionStart,
        on_frame: Callable[[bytes, int], None],
        on_end: Callable[[str], None],
        on_event: Callable[[int, int], None] | None = None,
        on_json: Callable[[str], None] | None = None,
    ) -> None:
        self.stream_id = start.stream_id
        self.session_id = start.session_id
        self.start = start
        self.on_frame = on_frame
        self.on_end = on_end
        self.on_event = on_event
        self.on_json = on_json
        self.closed = False
        self._link = link
        self._seq = 0

    def send(self, payload: bytes, timestamp: int) -> None:
        """Queue one frame for the next uplink batch; never blocks or awaits.

        payload: one Opus packet as received (RFC 7587) or PCM16 LE mono samples,
        per the session's codec. timestamp: media time of its first sample, in
        samples at the codec clock (48000 Hz for Opus). Each call takes the next
        seq, so frames dropped on the way (queue full, agent down: counted in
        AgentLink.dropped_frames) leave a gap the agent can see. No-op once closed.
        """
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFFFFFF
        if not self.closed:
            self._link._enqueue(self.stream_id, seq, timestamp, payload, first=not seq)

    def send_event(self, event: agent_pb2.Event, timestamp: int) -> None:
        """Queue one SessionEvent after the frames sent so far; never blocks or awaits.

        event: agent_pb2.EVENT_SPEECH_STARTED, EVENT_SPEECH_STOPPED or EVENT_INTERRUPT.
        timestamp: the caller's media time it refers to, in samples at the codec clock (as
        send()). The agent sees it after those frames and before later ones. Dropped (counted in
        AgentLink.dropped_events) while the stream is down; never dropped for a full queue.
        No-op once closed.
        """
        if not self.closed:
            event_message = agent_pb2.SessionEvent(stream_id=self.stream_id, event=event, timestamp=timestamp)
            self._link._enqueue_event(event_message)

    def send_json(self, text: str) -> None:
        """Queue one of the caller's JSON events (agent.proto JsonEvent) after the frames sent so far, as
        send_event does (same order, same drops: counted in AgentLink.dropped_events). text: one JSON
        object, checked by the caller (voicemesh.agent.events). No-op once closed."""
        if not self.closed:
            self._link._enqueue_event(agent_pb2.JsonEvent(stream_id=self.stream_id, json=text))

    def close(self, reason: str) -> None:
        """End the session: sends SessionEnd(reason) after its queued frames. on_end is not called.

        reason: a short label (for example "hangup", "ice_failed"). No-op once closed.
        """
        if not self.closed:
            self._link._close_session(self, reason)


class AgentLink:
    """One channel + one Connect stream to an agent endpoint, many sessions on it.

    Batching policy (latency vs CPU): a grpc.aio message costs far more CPU than
    the frames it carries (README, "the agent link's messages"), so frames are
    not sent one per message. send() queues the
    frame, and if no flush is pending, schedules one with loop.call_at at
    max(now, last_flush + batch_ms). An idle link therefore adds ~0 ms (the
    first frame goes out on the next loop iteration), and a busy link sends at
    most 1000 / batch_ms uplink messages/s whatever the number of sessions; the
    added latency is at most batch_ms. batch_ms=0 still batches what is queued
    within one loop iteration. A session's first frame does not wait for the
    interval: it goes out on the next loop iteration with whatever is queued,
    so a call's first audio reaches the agent without the batching delay. One uplink carries at most
    MAX_UPLINK_PAYLOAD_BYTES (1 MiB) of payload, below gRPC's 4 MB message
    limit; the rest follows at once.

    The queue holds at most queue_limit frames: on overflow the oldest is
    dropped. Frames sent while the stream is down are dropped. Both count in
    `dropped_frames`; downlink frames for an unknown stream_id count in
    `dropped_downlink_frames`. Events keep their place among a session's
    frames: a batch ends before the first frame queued after an event (the
    next batch follows at once). They are never dropped for a full queue,
    only while the stream is down (`dropped_events`). Downlink events for an
    unknown stream_id, of a kind an agent may not send (AGENT_EVENTS), or for
    a session opened without on_event count in `dropped_downlink_events`;
    JSON events (JsonEvent) keep their place among events the same way, and
    downlink ones for an unknown stream_id or a session opened without
    on_json count in `dropped_downlink_json`.
    A SessionEnd goes out once no frame or event queued before it is left.

    Failures: if the stream fails, the link reopens it after a backoff of
    0.1 s doubling to 2 s, or as soon as the channel is connected again (gRPC
    retries the connection every RECONNECT_MAX_S at most), and re-sends
    SessionStart for every live session (same stream_id, ``resumed`` set on
    those sent on an earlier stream). A target whose stream failed is passed
    to a resolving ``target`` as unreachable for UNREACHABLE_S, so the
    resolver can pick another agent. A new stream ends the outage once it delivers a
    Downlink or stays open HEALTHY_AFTER_S (2 s). Sessions see nothing of an
    outage shorter than give_up_s; once it lasts give_up_s, every live session
    gets on_end("agent_unavailable"), and so does, at once (on the next loop
    iteration), any session opened while no stream is open, until the outage ends.

    Downlink frames go to the session's on_frame(payload, timestamp), then
    downlink events to on_event(event, timestamp), then JSON events to
    on_json(text), then a downlink
    SessionEnd (the agent hangs up) to on_end(reason). Callbacks run
    on the event loop and must not block; an exception in one is logged, not
    raised. Use the link from the event loop's thread.
    """

    def __init__(self, target: str | Callable[[frozenset[str]], str | None], *, batch_ms: float = 10.0,
                 queue_limit: int = 2000, give_up_s: float = 5.0,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        """target: "host:port" of the agent, or a function of the targets whose stream failed within
        UNREACHABLE_S returning one (or None while there is none), asked again before every reconnect:
        agents found in the registry. batch_ms:
        minimum ms between uplink messages. queue_limit: frames. give_up_s: seconds of outage
        before sessions end. credentials: TLS to the agent (voicemesh.agent.tls.client_credentials);
        None is plaintext. A failed TLS handshake is an outage like any other (retried, then give_up_s)."""
        self._credentials = credentials
        self._resolve = target if callable(target) else (lambda _unreachable: target)
        self.target = ""
        self._failed_at: dict[str, float] = {}
        self.batch_s = batch_ms / 1000
        self.queue_limit = queue_limit
        self.give_up_s = give_up_s
        self.dropped_frames = 0
        self.dropped_downlink_frames = 0
        self.dropped_events = 0
        self.dropped_downlink_events = 0
        self.dropped_downlink_json = 0
        self.uplink_messages = 0
        self.downlink_messages = 0
        self._sessions: dict[int, AgentSession] = {}
        self._next_stream_id = 1
        self._frames: collections.deque[tuple[int, int, int, bytes]] = collections.deque()
        # Each event waits behind the frames queued before it: (frames ever queued then, event).
        self._events: collections.deque[tuple[int, agent_pb2.SessionEvent | agent_pb2.JsonEvent]] = collections.deque()
        self._frames_in = 0
        self._frames_out = 0
        self._starts: list[agent_pb2.SessionStart] = []
        self._started: set[int] = set()
        self._ends: list[agent_pb2.SessionEnd] = []
        self._up = False
        self._healthy = False
        self._given_up = False
        self._backoff_s = BACKOFF_MIN_S
        self._last_flush = float("-inf")
        self._flush_handle: asyncio.Handle | None = None
        self._give_up_handle: asyncio.TimerHandle | None = None
        self._healthy_handle: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop start() ran on; the link is used only after start()."""
        if self._loop is None:
            raise RuntimeError("AgentLink used before start()")
        return self._loop

    @property
    def connected(self) -> bool:
        """True while a Connect stream is open (frames are sent, not dropped)."""
        return self._up

    async def start(self) -> None:
        """Open the channel and start connecting in the background; returns at once.

        The outage clock (give_up_s) runs from here until the first stream is healthy.
        """
        self._loop = asyncio.get_running_loop()
        self._give_up_handle = self._event_loop.call_later(self.give_up_s, self._give_up)
        self._task = spawn(self._run(), "agent link")

    async def close(self) -> None:
        """Cancel the stream and close the channel. Live sessions are forgotten
        without callbacks (the agent ends them with the stream); close them first
        for an explicit SessionEnd."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for handle in (self._give_up_handle, self._healthy_handle):
            if handle is not None:
                handle.cancel()
        for session in self._sessions.values():
            session.closed = True
        self._sessions.clear()
        if self._channel is not None:
            await self._channel.close()

    def open_session(
        self,
        session_id: str,
        *,
        codec: agent_pb2.Codec,
        sample_rate_hz: int,
        on_frame: Callable[[bytes, int], None],
        on_end: Callable[[str], None],
        on_event: Callable[[int, int], None] | None = None,
        on_json: Callable[[str], None] | None = None,
        metadata: dict[str, str] | None = None,
        traceparent: str = "",
        session_config: str = "",
    ) -> AgentSession:
        """Add a session to the stream (sends SessionStart: mono, 20 ms frames).

        codec: agent_pb2.CODEC_OPUS (sample_rate_hz must be 48000, the RTP
        clock of RFC 7587 section 4.1) or agent_pb2.CODEC_PCM16 (any rate, Hz).
        on_frame(payload, timestamp) gets the agent's frames, on_event(event,
        timestamp) its EVENT_RESPONSE_STARTED and EVENT_RESPONSE_DONE, on_end(reason)
        the end of the session by the agent or by an outage ("agent_unavailable"),
        on_json(text) its JSON events for the caller (not checked here).
        metadata: free-form attributes for the agent. traceparent: W3C Trace
        Context of the session's trace. session_config: the caller's initial
        session configuration (a JSON object as text, or ""). Raises SessionFormatError.
        """
        if codec not in (agent_pb2.CODEC_OPUS, agent_pb2.CODEC_PCM16):
            raise SessionFormatError("codec", f"unsupported codec {codec}")
        if sample_rate_hz <= 0 or (codec == agent_pb2.CODEC_OPUS and sample_rate_hz != OPUS_CLOCK_HZ):
            raise SessionFormatError("sample_rate", f"unsupported sample rate {sample_rate_hz} Hz for codec {codec}")
        start = agent_pb2.SessionStart(
            stream_id=self._next_stream_id,
            session_id=session_id,
            codec=codec,
            sample_rate_hz=sample_rate_hz,
            channels=1,
            frame_ms=FRAME_MS,
            metadata=metadata,
            traceparent=traceparent,
            session_config=session_config,
        )
        self._next_stream_id += 1
        session = AgentSession(self, start, on_frame, on_end, on_event, on_json)
        if self._given_up and not self._up:
            session.closed = True
            self._event_loop.call_soon(_call_back, on_end, "agent_unavailable")
            return session
        self._sessions[session.stream_id] = session
        if self._up:
            self._starts.append(start)
            self._schedule_flush()
        return session

    def _enqueue(self, stream_id: int, seq: int, timestamp: int, payload: bytes, first: bool = False) -> None:
        if not self._up:
            self.dropped_frames += 1
            return
        if len(self._frames) >= self.queue_limit:
            self._frames.popleft()
            self._frames_out += 1
            self.dropped_frames += 1
        self._frames.append((stream_id, seq, timestamp, payload))
        self._frames_in += 1
        if first:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._flush()
        elif self._flush_handle is None:
            self._schedule_flush()

    def _enqueue_event(self, event: agent_pb2.SessionEvent | agent_pb2.JsonEvent) -> None:
        if not self._up:
            self.dropped_events += 1
            return
        self._events.append((self._frames_in, event))
        self._schedule_flush()

    def _close_session(self, session: AgentSession, reason: str) -> None:
        session.closed = True
        del self._sessions[session.stream_id]
        self._started.discard(session.stream_id)
        if self._up:
            self._ends.append(agent_pb2.SessionEnd(stream_id=session.stream_id, reason=reason))
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            when = max(self._event_loop.time(), self._last_flush + self.batch_s)
            self._flush_handle = self._event_loop.call_at(when, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self._wake.set()

    def _take_batch(self) -> agent_pb2.Uplink | None:
        frames, events = self._frames, self._events
        if not (self._starts or frames or events or self._ends):
            return None
        uplink = agent_pb2.Uplink(starts=self._starts)
        self._started.update(start.stream_id for start in self._starts)
        self._starts.clear()
        add = uplink.frames.add
        count = min(len(frames), events[0][0] - self._frames_out) if events else len(frames)
        taken = size = 0
        while taken < count and size < MAX_UPLINK_PAYLOAD_BYTES:
            stream_id, seq, timestamp, payload = frames.popleft()
            add(stream_id=stream_id, seq=seq, timestamp=timestamp, payload=payload)
            size += len(payload)
            taken += 1
        self._frames_out += taken
        while events and events[0][0] <= self._frames_out:
            event = events.popleft()[1]
            if isinstance(event, agent_pb2.JsonEvent):
                uplink.json_events.append(event)
            else:
                uplink.events.append(event)
        if frames or events:
            self._wake.set()
        else:
            uplink.ends.extend(self._ends)
            self._ends.clear()
        return uplink

    async def _uplinks(self, wake: asyncio.Event) -> AsyncIterator[agent_pb2.Uplink]:
        # grpc.aio drives this in its own task and does not stop it when the
        # call fails; it returns once _run has given the next stream a new event.
        while True:
            await wake.wait()
            if wake is not self._wake:
                return
            wake.clear()
            uplink = self._take_batch()
            if uplink is not None:
                self._last_flush = self._event_loop.time()
                self.uplink_messages += 1
                yield uplink

    async def _stub(self) -> agent_pb2_grpc.AgentStub | None:
        """A stub on the channel to the current target; a new channel when the target changed."""
        now = self._event_loop.time()
        target = self._resolve(frozenset(t for t, at in self._failed_at.items() if now - at < UNREACHABLE_S))
        if not target:
            return None
        if target != self.target or self._channel is None:
            if self._channel is not None:
                await self._channel.close()
            self.target = target
            self._channel = (grpc.aio.secure_channel(target, self._credentials, options=_CHANNEL_OPTIONS)
                             if self._credentials else grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS))
        return agent_pb2_grpc.AgentStub(self._channel)

    async def _run(self) -> None:
        while True:
            stub = await self._stub()
            if stub is None:
                await asyncio.sleep(self._backoff_s)
                self._backoff_s = min(self._backoff_s * 2, BACKOFF_MAX_S)
                continue
            wake = self._wake
            call = stub.Connect(self._uplinks(wake))
            try:
                await call.wait_for_connection()
                self._on_stream_up()
                async for downlink in call:
                    if downlink is None:  # grpc hands on None for a message that does not parse
                        logger.warning("agent %s sent a message that is not a Downlink", self.target)
                        break
                    self._on_downlink(downlink)
                else:
                    logger.warning("agent %s closed the stream", self.target)
            except grpc.aio.AioRpcError as error:
                logger.warning("agent %s stream failed: %s %s", self.target, error.code().name, error.details())
            finally:
                call.cancel()
                self._failed_at[self.target] = self._event_loop.time()
                self._on_stream_down()
                self._wake = asyncio.Event()
                wake.set()
            delay = self._backoff_s
            self._backoff_s = min(delay * 2, BACKOFF_MAX_S)
            await self._pause(delay)

    async def _pause(self, delay_s: float) -> None:
        """Wait ``delay_s`` before the next stream, or less: until the channel, which was not connected, is
        connected again (gRPC's own attempts, at most RECONNECT_MAX_S apart, see a restarted agent first)."""
        channel = self._channel
        if channel is None or channel.get_state() == grpc.ChannelConnectivity.READY:
            await asyncio.sleep(delay_s)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                state = channel.get_state(try_to_connect=True)
                while state != grpc.ChannelConnectivity.READY:
                    await channel.wait_for_state_change(state)
                    state = channel.get_state(try_to_connect=True)

    def _on_stream_up(self) -> None:
        self._up = True
        self._failed_at.pop(self.target, None)
        for session in self._sessions.values():
            session.start.resumed = session.stream_id in self._started
        self._starts = [session.start for session in self._sessions.values()]
        self._healthy_handle = self._event_loop.call_later(HEALTHY_AFTER_S, self._on_healthy)
        self._schedule_flush()
        logger.info("agent %s stream open, %d sessions", self.target, len(self._sessions))

    def _on_healthy(self) -> None:
        self._healthy = True
        self._given_up = False
        self._backoff_s = BACKOFF_MIN_S
        for handle in (self._healthy_handle, self._give_up_handle):
            if handle is not None:
                handle.cancel()
        self._healthy_handle = self._give_up_handle = None

    def _on_stream_down(self) -> None:
        if not self._up:
            return
        self._up = False
        self.dropped_frames += len(self._frames)
        self.dropped_events += len(self._events)
        self._frames.clear()
        self._events.clear()
        self._frames_out = self._frames_in
        self._starts.clear()
        self._ends.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._healthy_handle is not None:
            self._healthy_handle.cancel()
            self._healthy_handle = None
        if self._healthy:
            self._healthy = False
            self._give_up_handle = self._event_loop.call_later(self.give_up_s, self._give_up)
        elif self._given_up:
            self._give_up()

    def _on_downlink(self, downlink: agent_pb2.Downlink) -> None:
        self.downlink_messages += 1
        if not self._healthy:
            self._on_healthy()
        sessions = self._sessions
        for frame in downlink.frames:
            session = sessions.get(frame.stream_id)
            if session is None:
                self.dropped_downlink_frames += 1
                continue
            try:
                session.on_frame(frame.payload, frame.timestamp)
            except Exception:
                logger.exception("on_frame of session %s failed", session.session_id)
        for event in downlink.events:
            session = sessions.get(event.stream_id)
            if session is None or session.on_event is None or event.event not in AGENT_EVENTS:
                self.dropped_downlink_events += 1
                continue
            try:
                session.on_event(event.event, event.timestamp)
            except Exception:
                logger.exception("on_event of session %s failed", session.session_id)
        for json_event in downlink.json_events:
            session = sessions.get(json_event.stream_id)
            if session is None or session.on_json is None:
                self.dropped_downlink_json += 1
                continue
            try:
                session.on_json(json_event.json)
            except Exception:
                logger.exception("on_json of session %s failed", session.session_id)
        for end in downlink.ends:
            session = sessions.pop(end.stream_id, None)
            self._started.discard(end.stream_id)
            if session is not None:
                session.closed = True
                _call_back(session.on_end, end.reason)

    def _give_up(self) -> None:
        self._give_up_handle = None
        self._given_up = True
        sessions = list(self._sessions.values())
        self._sessions.clear()
        self._started.clear()
        logger.warning("agent %s unavailable for %.1f s, ending %d sessions", self.target, self.give_up_s, len(sessions))
        for session in sessions:
            session.closed = True
            _call_back(session.on_end, "agent_unavailable")


def _call_back(on_end: Callable[[str], None], reason: str) -> None:
    try:
        on_end(reason)
    except Exception:
        logger.exception("on_end(%r) failed", reason)
