"""A small SDK for voicemesh agents: subclass Agent and handle one call in on_session; the
multiplexed, batched Connect stream of proto/voicemesh/agent/v1/agent.proto stays in here.

    class Echo(Agent):
        async def on_session(self, session: Session) -> None:
            async for item in session:
                if isinstance(item, agent_pb2.AudioFrame):
                    await session.send_audio(item.payload)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import trace

from voicemesh.agent import tls
from voicemesh.agent.events import MAX_JSON_EVENT_BYTES, BadJsonEvent, parse_json_event
from voicemesh.agent.v1 import agent_pb2, agent_pb2_grpc
from voicemesh.runtime import telemetry
from voicemesh.runtime.tasks import spawn

logger = logging.getLogger("voicemesh.agent")

OPUS_CLOCK_HZ = 48000
LEAD_S = 0.06
"""How far ahead of real time send_audio lets an agent get, in seconds (3 frames of 20 ms): enough
to ride out the agent's own scheduling hiccups, little enough that an interrupt cuts the agent off
at once (the transceiver drops what it still holds; what is already on its way plays)."""
INBOX_LIMIT = 500
"""Caller frames and events a session holds for on_session (500 = 10 s of 20 ms frames); beyond
that the oldest are dropped and counted in Session.dropped."""
CALLER_EVENTS = frozenset({agent_pb2.EVENT_SPEECH_STARTED, agent_pb2.EVENT_SPEECH_STOPPED, agent_pb2.EVENT_INTERRUPT})
"""The SessionEvent kinds a transceiver sends; others are counted and dropped."""


class Session:
    """One call as an agent sees it; made by Agent for each SessionStart.

    ``start`` is its SessionStart (session_id, codec, sample_rate_hz, frame_ms, metadata,
    traceparent, session_config; ``config`` is the latter parsed). Iterate it (``async for item in
    session``) for the caller's audio (agent_pb2.AudioFrame) and events (agent_pb2.SessionEvent with
    EVENT_SPEECH_STARTED, EVENT_SPEECH_STOPPED or EVENT_INTERRUPT) and, for an Agent with
    ``json_events`` set, the caller's JSON events (dicts with a string ``"type"``, such as the OpenAI
    Realtime client events), in the order the transceiver sent them. The
    iteration ends when the call ends; ``end_reason`` then says why ("hangup", "ice_failed",
    ...; "stream_closed" if the transceiver's stream went away; the agent's own reason after
    hang_up). Use it from the event loop's thread.
    """

    def __init__(self, stream: _Stream, start: agent_pb2.SessionStart) -> None:
        self.start = start
        self.session_id = start.session_id
        self.end_reason = ""
        self.dropped = 0
        self._stream = stream
        self._inbox: collections.deque[agent_pb2.AudioFrame | agent_pb2.SessionEvent | dict[str, Any]] = (
            collections.deque())
        self._waiter: asyncio.Future[None] | None = None
        self._pcm = start.codec == agent_pb2.CODEC_PCM16
        self._clock_hz = start.sample_rate_hz if self._pcm else OPUS_CLOCK_HZ
        self._frame_s = (start.frame_ms or 20) / 1000
        self._seq = 0
        self._t0 = self._play_until = asyncio.get_running_loop().time()

    @property
    def resumed(self) -> bool:
        """True if the call was already under way on another stream (this agent before a restart, or another
        agent that failed) and resumes here mid-call: greet no one, keep going (SessionStart.resumed)."""
        return self.start.resumed

    @property
    def config(self) -> dict[str, Any]:
        """The caller's initial session configuration (the ``session`` JSON object of its
        ``POST /v1/realtime/calls``), or {} if it sent none (SessionStart.session_config)."""
        if not self.start.session_config:
            return {}
        config = json.loads(self.start.session_config)  # the transceiver checked it is an object
        return config if isinstance(config, dict) else {}

    @property
    def ended(self) -> bool:
        """True once the call ended, by either side: sends are dropped, iteration ends."""
        return bool(self.end_reason)

    def __aiter__(self) -> Session:
        return self

    async def __anext__(self) -> agent_pb2.AudioFrame | agent_pb2.SessionEvent | dict[str, Any]:
        while not self._inbox:
            if self.ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._inbox.popleft()

    async def send_audio(self, payload: bytes) -> None:
        """Send one frame to the caller, paced to real time.

        payload: one Opus packet of ``start.frame_ms`` (20 ms, RFC 7587) for CODEC_OPUS, or PCM16
        little-endian mono samples at ``start.sample_rate_hz`` for CODEC_PCM16 (any length; the
        transceiver encodes it in 20 ms frames). The frame gets the next seq and, as timestamp,
        its place on the agent's play-out timeline (samples at the codec clock since the session
        began; a pause in sending is a pause in that timeline). Returns at once while the agent
        is at most LEAD_S ahead of real time, else sleeps until it is, so an agent may hand over
        audio as fast as it makes it. Dropped once the session ended.
        """
        if self.ended:
            return
        now = asyncio.get_running_loop().time()
        begin = max(now, self._play_until)
        self._play_until = begin + (len(payload) / (2 * self._clock_hz) if self._pcm else self._frame_s)
        self._stream.frame(self.start.stream_id, self._seq, round((begin - self._t0) * self._clock_hz), payload)
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        ahead = self._play_until - now - LEAD_S
        if ahead > 0:
            await asyncio.sleep(ahead)

    def send_json(self, event: dict[str, Any]) -> None:
        """Send one JSON event to the caller (on its ``oai-events`` data channel, for callers of the
        OpenAI Realtime-compatible endpoint): ``event`` is a dict with a string ``"type"``, for example
        ``{"type": "response.done", "response": {...}}``. It goes out after the audio sent before it.
        Raises ValueError if it is not JSON-serializable, has no string type, or is over
        MAX_JSON_EVENT_BYTES as compact JSON. Dropped once the session ended (or by the transceiver, counted,
        if the caller has no data channel).
        """
        if not isinstance(event.get("type"), str) or not event["type"]:
            raise ValueError('a JSON event needs a string "type"')
        try:
            text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        except TypeError as exc:
            raise ValueError(f"a JSON event must be JSON-serializable: {exc}") from None
        if len(text.encode()) > MAX_JSON_EVENT_BYTES:
            raise ValueError(f"a JSON event may have at most {MAX_JSON_EVENT_BYTES} bytes")
        if not self.ended:
            self._stream.json(self.start.stream_id, text)

    def response_started(self) -> None:
        """Tell the transceiver that the audio sent from now on is a response the caller may interrupt."""
        self._event(agent_pb2.EVENT_RESPONSE_STARTED)

    def response_done(self) -> None:
        """Tell the transceiver that the response is over (played out or interrupted)."""
        self._event(agent_pb2.EVENT_RESPONSE_DONE)

    def hang_up(self, reason: str = "agent_done") -> None:
        """End the call from the agent's side (SessionEnd with ``reason``, a short counter label).

        The iteration ends; no-op once ended.
        """
        if not self.ended:
            self._stream.end(self, reason)
            self._close(reason)
            self._inbox.clear()

    def _event(self, event: int) -> None:
        if not self.ended:
            now = asyncio.get_running_loop().time()
            timestamp = round((max(now, self._play_until) - self._t0) * self._clock_hz)
            self._stream.event(self.start.stream_id, event, timestamp)

    def _put(self, item: agent_pb2.AudioFrame | agent_pb2.SessionEvent | dict[str, Any]) -> None:
        if len(self._inbox) >= INBOX_LIMIT:
            self._inbox.popleft()
            self.dropped += 1
        self._inbox.append(item)
        self._wake_up()

    def _close(self, reason: str) -> None:
        self.end_reason = reason
        self._wake_up()

    def _wake_up(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Stream:
    """One Connect stream on the agent's side: its sessions by stream_id and the Downlinks to send.

    What the sessions send waits in ``outbox`` until ``wake`` is set: at most every ``agent.batch_ms``
    (from the last send, ``sent()``), at once for a session's first frame (seq 0)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.sessions: dict[int, Session] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.outbox: list[agent_pb2.Downlink] = []
        self.wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._batch_s = agent.batch_ms / 1000
        self._last_sent = float("-inf")
        self._flush_handle: asyncio.TimerHandle | None = None

    def _batch(self, for_frame: bool, at_once: bool = False) -> agent_pb2.Downlink:
        # A frame sent after an event goes in a later Downlink: receivers apply frames before events.
        if not self.outbox or (for_frame and (self.outbox[-1].events or self.outbox[-1].json_events)):
            self.outbox.append(agent_pb2.Downlink())
        if at_once:
            self._flush()
        elif self._flush_handle is None and not self.wake.is_set():
            when = max(self._loop.time(), self._last_sent + self._batch_s)
            self._flush_handle = self._loop.call_at(when, self._flush)
        return self.outbox[-1]

    def _flush(self) -> None:
        self.close()
        self.wake.set()

    def sent(self) -> None:
        """The outbox went out: the next batch waits batch_ms from now."""
        self._last_sent = self._loop.time()

    def close(self) -> None:
        """No batch timer is pending any more (the outbox is going out now, or the stream is over)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def frame(self, stream_id: int, seq: int, timestamp: int, payload: bytes) -> None:
        self._batch(True, at_once=not seq).frames.add(stream_id=stream_id, seq=seq, timestamp=timestamp,
                                                      payload=payload)

    def event(self, stream_id: int, event: int, timestamp: int) -> None:
        self._batch(False).events.add(stream_id=stream_id, event=event, timestamp=timestamp)

    def json(self, stream_id: int, text: str) -> None:
        self._batch(False).json_events.add(stream_id=stream_id, json=text)

    def end(self, session: Session, reason: str) -> None:
        self.sessions.pop(session.start.stream_id, None)
        self._batch(False).ends.add(stream_id=session.start.stream_id, reason=reason)

    async def read(self, uplinks: AsyncIterator[agent_pb2.Uplink]) -> None:
        agent = self.agent
        try:
            async for uplink in uplinks:
                for start in uplink.starts:
                    self._open(start)
                for frame in uplink.frames:
                    session = self.sessions.get(frame.stream_id)
                    if session is None:
                        agent.dropped_frames += 1
                    else:
                        session._put(frame)
                for event in uplink.events:
                    session = self.sessions.get(event.stream_id)
                    if session is None or event.event not in CALLER_EVENTS:
                        agent.dropped_events += 1
                    else:
                        session._put(event)
                for json_event in uplink.json_events:
                    session = self.sessions.get(json_event.stream_id)
                    if session is None or not agent.json_events:
                        agent.dropped_json_events += 1
                        continue
                    try:
                        session._put(parse_json_event(json_event.json))
                    except BadJsonEvent:
                        agent.dropped_json_events += 1
                for end in uplink.ends:
                    session = self.sessions.pop(end.stream_id, None)
                    if session is not None:
                        session._close(end.reason or "hangup")
        finally:
            for session in self.sessions.values():
                session._close("stream_closed")
            self.sessions.clear()
            self.wake.set()

    def _open(self, start: agent_pb2.SessionStart) -> None:
        if start.stream_id in self.sessions:
            self.sessions.pop(start.stream_id)._close("restarted")
        session = self.sessions[start.stream_id] = Session(self, start)
        task = spawn(self._run(session), f"agent session {session.session_id}", self.tasks)
        task.add_done_callback(self._wake)

    async def _run(self, session: Session) -> None:
        reason = "agent_done"
        span = telemetry.start_agent_span(session.session_id, session.start.traceparent, type(self.agent).__name__)
        try:
            with trace.use_span(span, end_on_exit=True):
                await self.agent.on_session(session)
        except Exception:
            logger.exception("on_session of session %s failed", session.session_id)
            reason = "agent_error"
        session.hang_up(reason)

    def _wake(self, _task: asyncio.Task[None]) -> None:
        self.wake.set()


class Agent(agent_pb2_grpc.AgentServicer):
    """Base class of an agent: override ``on_session``; serve it with ``serve`` or ``run``.

    Each SessionStart on a Connect stream starts ``on_session(session)`` in its own task. When it
    returns the agent hangs up ("agent_done"; "agent_error" if it raised). When the call ends
    first, the session's iteration ends; the task is cancelled only if the stream goes away and it
    has not returned. Counters over all streams: ``dropped_frames`` and ``dropped_events``
    (unknown stream_id, or an event kind a transceiver does not send), ``dropped_json_events`` (unknown
    stream_id, not a JSON object with a type, or ``json_events`` not set).

    ``json_events``: set it (a class attribute) to have sessions yield the caller's JSON events; agents
    written before JSON events existed leave it unset and never see one.
    """

    json_events = False
    batch_ms = 10.0
    """Downlink batching, as the transceiver's uplink (``--agent-batch-ms``): what the sessions send
    goes out in one Downlink at most every batch_ms ms per stream, a session's first frame at once;
    each frame waits at most batch_ms. A Downlink costs the same CPU on both sides whatever it
    carries, and sessions that pace their own audio (send_audio) would otherwise send one each
    for most frames. 0: each loop iteration's frames in one Downlink."""

    def __init__(self) -> None:
        self.dropped_frames = 0
        self.dropped_events = 0
        self.dropped_json_events = 0

    async def on_session(self, session: Session) -> None:
        """Handle one call; see Session."""
        raise NotImplementedError

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.Uplink], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.Downlink]:
        """One transceiver's stream (agent.proto Agent.Connect): many sessions, batched both ways."""
        stream = _Stream(self)
        reader = spawn(stream.read(request_iterator), "agent stream reader")
        try:
            while not (reader.done() and not stream.tasks and not stream.outbox):
                await stream.wake.wait()
                stream.wake.clear()
                outbox, stream.outbox = stream.outbox, []
                if outbox:
                    stream.sent()
                for downlink in outbox:
                    yield downlink
        finally:
            stream.close()
            for task in (reader, *stream.tasks):
                task.cancel()
            await asyncio.gather(reader, *stream.tasks, return_exceptions=True)


async def serve(agent: agent_pb2_grpc.AgentServicer, bind: str = "127.0.0.1:0", *,
                credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.aio.Server, int]:
    """Start a gRPC server for ``agent`` on ``bind`` ("host:port"; port 0 picks a free one), over TLS
    with ``credentials`` (voicemesh.agent.tls.server_credentials), else plaintext.

    Returns the started server and its port; stop it with ``await server.stop(grace_s)``. Raises
    RuntimeError if the address cannot be bound.
    """
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServicer_to_server(agent, server)
    port = server.add_secure_port(bind, credentials) if credentials else server.add_insecure_port(bind)
    await server.start()
    logger.info("agent %s listening on %s (port %d)", type(agent).__name__, bind, port)
    return server, port


def run(agent: agent_pb2_grpc.AgentServicer, bind: str = "127.0.0.1:50051", *, cert: str = "", key: str = "",
        client_ca: str = "") -> None:
    """Serve ``agent`` on ``bind`` until interrupted (Ctrl-C); for scripts. With ``cert`` and ``key`` (PEM
    files) it serves TLS; with ``client_ca`` too, only clients with a certificate from that CA (mutual TLS).
    Raises OSError, ValueError for unreadable or half-given TLS files."""
    credentials = tls.server_credentials(cert, key, client_ca) if cert or key or client_ca else None

    async def main() -> None:
        server, _ = await serve(agent, bind, credentials=credentials)
        await server.wait_for_termination()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
