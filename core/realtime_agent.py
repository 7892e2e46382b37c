"""The Realtime example agent: answers an OpenAI Realtime app's ``response.create`` by speaking a clip,
with the server events an app expects around it; it shows the JSON event side of the SDK end to end.

Run it with ``voicemesh agent --kind realtime`` (it speaks voicemesh/app/assets/speech.wav), or in the
transceiver's process with ``voicemesh transceiver --agent-kind realtime``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import av

from voicemesh.agent import sdk
from voicemesh.agent.v1 import agent_pb2
from voicemesh.core.media import RTP_CLOCK_HZ, OpusEncoder
from voicemesh.core.realtime import new_id
from voicemesh.runtime.tasks import spawn

logger = logging.getLogger("voicemesh.agent")

FRAME_MS = 20
MODEL = "voicemesh-realtime-example"
"""The ``model`` its session objects name (an app's own ``session.model`` is kept if it sends one)."""


class RealtimeAgent(sdk.Agent):
    """Speaks ``clip`` (PCM16 mono at ``clip_rate_hz``) for every ``response.create``, and says what it says
    in ``transcript`` (words spread over the clip's duration).

    Client events it answers (OpenAI Realtime API names):

    - at the start of a call (not a resumed one): ``session.created`` with the caller's initial session
      configuration (SessionStart.session_config) over its defaults;
    - ``session.update``: merges ``session`` into the configuration, answers ``session.updated``;
    - ``response.create``: ``response.created``, ``response.output_item.added``,
      ``response.content_part.added``, then the clip in real time with
      ``response.output_audio_transcript.delta`` per word, then ``response.output_audio.done``,
      ``response.output_audio_transcript.done``, ``response.content_part.done``,
      ``response.output_item.done`` and ``response.done`` (``status`` ``completed``). A second
      ``response.create`` while one plays gets ``error`` ``conversation_already_has_active_response``;
    - ``response.cancel``, or the caller speaking during the response (EVENT_INTERRUPT, barge-in): the
      playback stops and ``response.done`` says ``cancelled`` (``client_cancelled`` or ``turn_detected``).
      With ``interrupt_response`` false in the session's ``audio.input.turn_detection`` (or the older
      ``turn_detection``), as OpenAI's server VAD takes it, responses are not interruptible: the agent
      sends no EVENT_RESPONSE_STARTED, so the transceiver never mutes it;
    - anything else: ``error`` ``unsupported_event``.

    For inspection: ``received`` counts the client event types heard.
    """

    json_events = True

    def __init__(self, clip: bytes, clip_rate_hz: int, transcript: str) -> None:
        super().__init__()
        self.clip = clip
        self.clip_rate_hz = clip_rate_hz
        self.transcript = transcript
        self.received: collections.Counter[str] = collections.Counter()
        self._frames: dict[tuple[int, int], list[bytes]] = {}
        self.frames(agent_pb2.CODEC_OPUS, RTP_CLOCK_HZ)  # encoding blocks the loop: once, before any call

    def frames(self, codec: int, rate_hz: int) -> list[bytes]:
        """The clip as the session's frames: Opus packets for CODEC_OPUS, 20 ms of PCM16 at ``rate_hz`` for
        CODEC_PCM16; made once per format."""
        key = (codec, rate_hz)
        if key not in self._frames:
            if codec == agent_pb2.CODEC_OPUS:
                self._frames[key] = OpusEncoder(RTP_CLOCK_HZ).encode(_resample(self.clip, self.clip_rate_hz, RTP_CLOCK_HZ))
            else:
                pcm = _resample(self.clip, self.clip_rate_hz, rate_hz)
                step = rate_hz * FRAME_MS // 1000 * 2
                self._frames[key] = [pcm[i:i + step] for i in range(0, len(pcm), step)]
        return self._frames[key]

    async def on_session(self, session: sdk.Session) -> None:
        """Answer the caller's client events until the call ends."""
        config: dict[str, Any] = {"object": "realtime.session", "id": new_id("sess"), "type": "realtime",
                                  "model": MODEL, "output_modalities": ["audio"], **session.config}
        if not session.resumed:
            session.send_json({"type": "session.created", "event_id": new_id("event"), "session": config})
        playing: _Response | None = None
        try:
            async for item in session:
                if isinstance(item, agent_pb2.AudioFrame):
                    continue
                if isinstance(item, agent_pb2.SessionEvent):
                    if item.event == agent_pb2.EVENT_INTERRUPT and playing is not None and playing.interruptible:
                        playing.cancel("turn_detected")
                    continue
                kind = item["type"]
                self.received[kind] += 1
                if kind == "session.update" and isinstance(item.get("session"), dict):
                    config.update(item["session"])
                    session.send_json({"type": "session.updated", "event_id": new_id("event"), "session": config})
                elif kind == "response.create":
                    if playing is not None and not playing.task.done():
                        _error(session, item, "conversation_already_has_active_response",
                               f"response {playing.id} is in progress")
                    else:
                        playing = _Response(self, session, _interruptible(config))
                elif kind == "response.cancel":
                    if playing is not None and not playing.task.done():
                        playing.cancel("client_cancelled")
                    else:
                        _error(session, item, "response_cancel_not_active", "no response is in progress")
                else:
                    _error(session, item, "unsupported_event", f"this example agent does not handle {kind!r}")
        finally:
            if playing is not None:
                playing.task.cancel()


class _Response:
    """One spoken response and its events; ``task`` plays it."""

    def __init__(self, agent: RealtimeAgent, session: sdk.Session, interruptible: bool) -> None:
        self.id = new_id("resp")
        self.interruptible = interruptible
        self.item_id = new_id("item")
        self.session = session
        self.said: list[str] = []
        self.reason = ""
        self.task = spawn(self._play(agent), f"response of {session.session_id}")

    def cancel(self, reason: str) -> None:
        """Stop the playback; the response ends ``cancelled`` with ``reason``."""
        if not self.task.done():
            self.reason = reason
            self.task.cancel()

    def _send(self, kind: str, **fields: Any) -> None:
        self.session.send_json({"type": kind, "event_id": new_id("event"), **fields})

    def _part(self, **more: Any) -> dict[str, Any]:
        return {"response_id": self.id, "item_id": self.item_id, "output_index": 0, "content_index": 0, **more}

    def _item(self, status: str) -> dict[str, Any]:
        return {"id": self.item_id, "object": "realtime.item", "type": "message", "status": status,
                "role": "assistant", "content": [{"type": "output_audio", "transcript": " ".join(self.said)}]}

    def _response(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        details = {"type": "cancelled", "reason": self.reason} if status == "cancelled" else None
        return {"id": self.id, "object": "realtime.response", "status": status, "status_details": details,
                "output": output, "output_modalities": ["audio"]}

    async def _play(self, agent: RealtimeAgent) -> None:
        session = self.session
        self._send("response.created", response=self._response("in_progress", []))
        frames = agent.frames(session.start.codec, session.start.sample_rate_hz)
        words = agent.transcript.split()
        self._send("response.output_item.added", response_id=self.id, output_index=0,
                   item={**self._item("in_progress"), "content": []})
        self._send("response.content_part.added", **self._part(part={"type": "output_audio", "transcript": ""}))
        if self.interruptible:
            session.response_started()
        try:
            for n, frame in enumerate(frames):
                while len(self.said) < len(words) and len(self.said) * len(frames) <= n * len(words):
                    word = words[len(self.said)]
                    self._send("response.output_audio_transcript.delta",
                               **self._part(delta=word if not self.said else " " + word))
                    self.said.append(word)
                await session.send_audio(frame)
        except asyncio.CancelledError:
            self._send("response.done", response=self._response("cancelled", [self._item("incomplete")]))
            raise
        finally:
            if self.interruptible:
                session.response_done()
        transcript = " ".join(self.said)
        self._send("response.output_audio.done", **self._part())
        self._send("response.output_audio_transcript.done", **self._part(transcript=transcript))
        self._send("response.content_part.done",
                   **self._part(part={"type": "output_audio", "transcript": transcript}))
        self._send("response.output_item.done", response_id=self.id, output_index=0, item=self._item("completed"))
        self._send("response.done", response=self._response("completed", [self._item("completed")]))
        logger.info("response spoken", extra={"session_id": session.session_id, "frames": len(frames)})


def _interruptible(config: dict[str, Any]) -> bool:
    """Whether the caller's speech may interrupt a response: ``interrupt_response`` of the session's turn
    detection (GA ``audio.input.turn_detection``, or the beta's top-level ``turn_detection``), true by default."""
    audio = config.get("audio")
    detection = audio.get("input", {}).get("turn_detection") if isinstance(audio, dict) and isinstance(
        audio.get("input"), dict) else config.get("turn_detection")
    return not (isinstance(detection, dict) and detection.get("interrupt_response") is False)


def _error(session: sdk.Session, event: dict[str, Any], code: str, message: str) -> None:
    """An ``error`` server event about the client ``event``."""
    client_event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
    session.send_json({"type": "error", "event_id": new_id("event"),
                       "error": {"type": "invalid_request_error", "code": code, "message": message,
                                 "param": None, "event_id": client_event_id}})


def _resample(pcm: bytes, from_hz: int, to_hz: int) -> bytes:
    """PCM16 mono from ``from_hz`` to ``to_hz`` (PyAV's resampler)."""
    if from_hz == to_hz:
        return pcm
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
    frame.planes[0].update(pcm[:len(pcm) // 2 * 2])
    frame.sample_rate = from_hz
    resampler = av.AudioResampler(format="s16", layout="mono", rate=to_hz)
    out = [*resampler.resample(frame), *resampler.resample(None)]
    return b"".join(bytes(f.planes[0])[:f.samples * 2] for f in out)
