"""One session's OpenAI Realtime-compatible event channel, sans-IO: the caller's ``oai-events`` data
channel on one side, the agent's JSON events (agent.proto JsonEvent) on the other.

The transceiver reads no event's meaning. It checks each one (voicemesh/agent/events.py) and passes it
on: the caller's client events (``session.update``, ``response.create``, ``response.cancel``, ...) to
the agent, the agent's server events to the caller. It adds its own server events from its voice
activity detection (``input_audio_buffer.speech_started`` and ``speech_stopped``, core/vad.py) and an
``error`` event for each client event it drops. Events for a side that is not there yet (the data
channel opens after DTLS, the agent stream when the caller connects) wait in a bounded queue.

Time and ids come in from the adapter (core/transceiver.py), so tests feed bytes and read what is sent.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from voicemesh.agent.events import BadJsonEvent, parse_json_event
from voicemesh.wire.ratelimit import TokenBucket

CHANNEL_LABEL = "oai-events"
"""The data channel a caller of the Realtime-compatible endpoint opens (OpenAI's WebRTC guide). Channels with
other labels are closed at once and counted (``refused_channel``)."""

MAX_WAITING = 64
"""Events held for a side that is not there yet, per direction; beyond that the oldest is dropped
(``dropped_waiting``)."""

CALLER_EVENTS_PER_S = 20.0
CALLER_EVENTS_BURST = 50
"""A caller may send CALLER_EVENTS_BURST events at once and CALLER_EVENTS_PER_S after that; the rest are
dropped (``dropped_caller_rate_limited``), with one ``error`` event per run of drops. Realtime apps send a
few events per turn; this bounds what one caller can make the agent link carry."""


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: ``prefix`` and ``_`` and 22 random URL-safe characters (``event_...``)."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"


class RealtimeEvents:
    """The event channel of one session; use it from the event loop's thread.

    ``counters`` is shared by the transceiver's sessions (``GET /v1/status``, ``realtime``):
    ``caller_events`` and ``agent_events`` passed on, ``speech_events`` sent, ``errors_sent``,
    ``dropped_caller_<reason>`` (BadJsonEvent reasons, ``rate_limited``), ``dropped_agent_<reason>``,
    ``dropped_waiting``, ``channels`` and ``refused_channel`` (channel_opened). ``clock()`` is monotonic
    seconds; ``ids(prefix)`` makes event and item ids.
    """

    def __init__(self, counters: Counter[str], clock: Callable[[], float],
                 ids: Callable[[str], str] = new_id) -> None:
        self.counters = counters
        self._clock = clock
        self._ids = ids
        self._to_caller: Callable[[str], None] | None = None
        self._to_agent: Callable[[str], None] | None = None
        self._for_caller: deque[str] = deque()
        self._for_agent: deque[str] = deque()
        self._bucket = TokenBucket(CALLER_EVENTS_PER_S, CALLER_EVENTS_BURST, clock())
        self._limited = False
        self._item_id = ""
        self._unseen_start: int | None = None  # audio_ms of speech that started before the channel opened
        self._channel_seen = False

    def channel_opened(self, label: str) -> bool:
        """The caller opened a data channel labelled ``label``: True for the first CHANNEL_LABEL one (counted
        as ``channels``; call caller_open when it is open), False for any other (``refused_channel``: close it)."""
        if label != CHANNEL_LABEL or self._channel_seen:
            self.counters["refused_channel"] += 1
            return False
        self._channel_seen = True
        self.counters["channels"] += 1
        return True

    def caller_open(self, send: Callable[[str], None]) -> None:
        """The caller's data channel is open: ``send(text)`` sends one message on it. What waited is sent."""
        self._to_caller = send
        self._flush(self._for_caller, send)
        if self._unseen_start is not None:
            self.speech(True, self._unseen_start)
            self._unseen_start = None

    def caller_closed(self) -> None:
        """The caller's data channel closed: its events wait again (and are dropped with the session)."""
        self._to_caller = None

    def agent_open(self, send: Callable[[str], None]) -> None:
        """The agent's session is open: ``send(text)`` queues one JSON event for it. What waited is sent."""
        self._to_agent = send
        self._flush(self._for_agent, send)

    def from_caller(self, data: str | bytes) -> None:
        """One message from the caller's data channel: checked, rate-limited, passed to the agent. A dropped
        one is answered with an ``error`` event (``error.code``: the drop reason)."""
        if self._bucket.take(self._clock()) > 0:
            self.counters["dropped_caller_rate_limited"] += 1
            if not self._limited:
                self._limited = True
                self._error("rate_limited", f"more than {CALLER_EVENTS_PER_S:g} events per second; events are"
                                            " dropped until the rate falls", None)
            return
        self._limited = False
        try:
            parse_json_event(data)
        except BadJsonEvent as exc:
            self.counters[f"dropped_caller_{exc.reason}"] += 1
            self._error(exc.reason, str(exc), None)
            return
        self.counters["caller_events"] += 1
        text = data if isinstance(data, str) else data.decode()
        self._pass(text, self._to_agent, self._for_agent)

    def from_agent(self, text: str) -> None:
        """One JSON event from the agent: checked and passed to the caller; a bad one is dropped and counted
        (the caller is not told: the fault is the agent's)."""
        try:
            parse_json_event(text)
        except BadJsonEvent as exc:
            self.counters[f"dropped_agent_{exc.reason}"] += 1
            return
        self.counters["agent_events"] += 1
        self._pass(text, self._to_caller, self._for_caller)

    def speech(self, started: bool, audio_ms: int) -> None:
        """The caller started (``started``) or stopped speaking, ``audio_ms`` after its first audio: sends
        ``input_audio_buffer.speech_started`` (``audio_start_ms``) or ``speech_stopped`` (``audio_end_ms``),
        the pair sharing an ``item_id``, as OpenAI's server VAD does. Before the caller's channel is open
        nothing is sent: speech still going on when it opens is announced then (with its own start time),
        speech already over is no news."""
        if self._to_caller is None:
            self._unseen_start = audio_ms if started else None
            return
        if started or not self._item_id:
            self._item_id = self._ids("item")
        kind, field = ("speech_started", "audio_start_ms") if started else ("speech_stopped", "audio_end_ms")
        self.counters["speech_events"] += 1
        self._server_event({"type": f"input_audio_buffer.{kind}", field: audio_ms, "item_id": self._item_id})

    def _error(self, code: str, message: str, client_event_id: str | None) -> None:
        """An OpenAI ``error`` server event (``error``: type, code, message, param, event_id)."""
        self.counters["errors_sent"] += 1
        self._server_event({"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                                       "message": message, "param": None,
                                                       "event_id": client_event_id}})

    def _server_event(self, event: dict[str, Any]) -> None:
        text = json.dumps({"type": event["type"], "event_id": self._ids("event"), **event}, separators=(",", ":"))
        self._pass(text, self._to_caller, self._for_caller)

    def _pass(self, text: str, send: Callable[[str], None] | None, waiting: deque[str]) -> None:
        if send is not None:
            send(text)
            return
        if len(waiting) >= MAX_WAITING:
            waiting.popleft()
            self.counters["dropped_waiting"] += 1
        waiting.append(text)

    @staticmethod
    def _flush(waiting: deque[str], send: Callable[[str], None]) -> None:
        while waiting:
            send(waiting.popleft())
