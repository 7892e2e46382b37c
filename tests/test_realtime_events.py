"""The event channel's sans-IO core (core/realtime.py) and the JSON event check (voicemesh/agent/events.py):
bytes in, what each side was sent out."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from voicemesh.agent.events import MAX_JSON_EVENT_BYTES, BadJsonEvent, parse_json_event
from voicemesh.core.realtime import CALLER_EVENTS_BURST, CALLER_EVENTS_PER_S, MAX_WAITING, RealtimeEvents

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def channel() -> tuple[RealtimeEvents, list[str], list[str], Counter, Clock]:
    counters: Counter[str] = Counter()
    clock = Clock()
    ids = iter(range(1_000_000))
    events = RealtimeEvents(counters, clock, lambda prefix: f"{prefix}_{next(ids)}")
    to_caller: list[str] = []
    to_agent: list[str] = []
    events.caller_open(to_caller.append)
    events.agent_open(to_agent.append)
    return events, to_caller, to_agent, counters, clock


@pytest.mark.parametrize(("data", "reason"), [
    ("{not json", "not_json"),
    ("[1, 2]", "not_object"),
    ('{"event_id": "e1"}', "no_type"),
    ('{"type": ""}', "no_type"),
    ('{"type": 7}', "no_type"),
    (b"\xff\xfe{}", "not_utf8"),
    ("[" * 100_000, "too_large"),
    ("[" * 50_000, "not_json"),
    ('{"type": "x", "pad": "' + "y" * MAX_JSON_EVENT_BYTES + '"}', "too_large"),
])
def test_a_bad_json_event_says_why(data, reason) -> None:
    with pytest.raises(BadJsonEvent) as bad:
        parse_json_event(data)
    assert bad.value.reason == reason


def test_client_events_pass_to_the_agent_unchanged() -> None:
    events, to_caller, to_agent, counters, _ = channel()
    for kind in ("session.update", "response.create", "response.cancel", "conversation.item.create"):
        events.from_caller(json.dumps({"type": kind, "event_id": "evt_1"}))
    events.from_caller(b'{"type": "response.create"}')
    assert [json.loads(text)["type"] for text in to_agent] == [
        "session.update", "response.create", "response.cancel", "conversation.item.create", "response.create"]
    assert to_caller == [] and counters == {"caller_events": 5}


def test_a_bad_client_event_is_dropped_counted_and_answered_with_an_error_event() -> None:
    events, to_caller, to_agent, counters, _ = channel()
    events.from_caller("{not json")
    events.from_caller('{"type": "x", "pad": "' + "y" * MAX_JSON_EVENT_BYTES + '"}')
    assert to_agent == []
    errors = [json.loads(text) for text in to_caller]
    assert [e["type"] for e in errors] == ["error", "error"]
    assert [e["error"]["code"] for e in errors] == ["not_json", "too_large"]
    assert errors[0]["error"]["type"] == "invalid_request_error" and errors[0]["event_id"] == "event_0"
    assert counters == {"dropped_caller_not_json": 1, "dropped_caller_too_large": 1, "errors_sent": 2}


def test_a_caller_over_its_event_rate_is_cut_off_with_one_error_per_run() -> None:
    events, to_caller, to_agent, counters, clock = channel()
    for _ in range(CALLER_EVENTS_BURST + 10):
        events.from_caller('{"type": "response.create"}')
    assert len(to_agent) == CALLER_EVENTS_BURST
    assert [json.loads(text)["error"]["code"] for text in to_caller] == ["rate_limited"]
    assert counters["dropped_caller_rate_limited"] == 10
    clock.now += 1.0
    for _ in range(int(CALLER_EVENTS_PER_S)):
        events.from_caller('{"type": "response.create"}')
    assert len(to_agent) == CALLER_EVENTS_BURST + int(CALLER_EVENTS_PER_S)


def test_agent_events_go_to_the_caller_and_bad_ones_are_dropped_silently() -> None:
    events, to_caller, _, counters, _ = channel()
    events.from_agent('{"type": "response.done", "response": {"status": "completed"}}')
    events.from_agent("[]")
    assert to_caller == ['{"type": "response.done", "response": {"status": "completed"}}']
    assert counters == {"agent_events": 1, "dropped_agent_not_object": 1}


def test_events_wait_for_a_side_that_is_not_there_yet_in_a_bounded_queue() -> None:
    counters: Counter[str] = Counter()
    events = RealtimeEvents(counters, Clock())
    for n in range(MAX_WAITING + 3):
        events.from_agent(json.dumps({"type": "session.created", "n": n}))
    events.from_caller('{"type": "response.create"}')
    to_caller: list[str] = []
    to_agent: list[str] = []
    events.caller_open(to_caller.append)
    events.agent_open(to_agent.append)
    assert [json.loads(text)["n"] for text in to_caller] == list(range(3, MAX_WAITING + 3))
    assert to_agent == ['{"type": "response.create"}'] and counters["dropped_waiting"] == 3


def test_speech_still_going_on_when_the_channel_opens_is_announced_then() -> None:
    counters: Counter[str] = Counter()
    events = RealtimeEvents(counters, Clock())
    events.speech(True, 40)
    events.speech(False, 900)
    events.speech(True, 1500)
    to_caller: list[str] = []
    events.caller_open(to_caller.append)
    [started] = (json.loads(text) for text in to_caller)
    assert (started["type"], started["audio_start_ms"]) == ("input_audio_buffer.speech_started", 1500)
    events.speech(False, 2600)
    assert json.loads(to_caller[-1])["item_id"] == started["item_id"]


def test_speech_events_pair_by_item_id_and_need_an_open_channel() -> None:
    counters: Counter[str] = Counter()
    ids = iter(range(100))
    events = RealtimeEvents(counters, Clock(), lambda prefix: f"{prefix}_{next(ids)}")
    events.speech(True, 10)
    events.speech(False, 900)
    to_caller: list[str] = []
    events.caller_open(to_caller.append)
    events.speech(True, 1240)
    events.speech(False, 3020)
    events.speech(True, 4000)
    started, stopped, again = (json.loads(text) for text in to_caller)
    assert started == {"type": "input_audio_buffer.speech_started", "event_id": "event_1", "audio_start_ms": 1240,
                       "item_id": "item_0"}
    assert stopped == {"type": "input_audio_buffer.speech_stopped", "event_id": "event_2", "audio_end_ms": 3020,
                       "item_id": "item_0"}
    assert again["item_id"] == "item_3" and counters == {"speech_events": 3}


def test_only_the_first_oai_events_channel_is_taken() -> None:
    events, *_, counters, _ = channel()
    assert [events.channel_opened(label) for label in ("chat", "oai-events", "oai-events")] == [False, True, False]
    assert counters == {"channels": 1, "refused_channel": 2}
