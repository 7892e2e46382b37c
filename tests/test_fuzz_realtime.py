"""Fuzzing the Realtime endpoint's parsers with hypothesis: call bodies (voicemesh/runtime/http.py read_call,
through a real aiohttp server: multipart forms of any parts, boundaries and mutations) get the offer or a
problem, never a server error; any data channel message (core/realtime.py) is passed on whole or answered
with one error event, never raises."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_whip import exchange

from voicemesh.agent.events import BadJsonEvent, parse_json_event
from voicemesh.core.realtime import RealtimeEvents
from voicemesh.runtime.http import read_call, serve_app

pytestmark = pytest.mark.integration


@pytest.fixture
async def calls():
    """A server whose POST /calls answers 200 with what read_call() read, or its problem. Yields (host, port)."""

    async def call(request: web.Request) -> web.Response:
        result = await read_call(request)
        if isinstance(result, web.Response):
            return result
        return web.json_response({"sdp": result.sdp, "session": result.session})

    app = web.Application()
    app.router.add_post("/calls", call)
    runner, url = await serve_app(app, "127.0.0.1", 0)
    yield "127.0.0.1", int(url.rpartition(":")[2])
    await runner.cleanup()


boundaries = st.one_of(st.just(b"vmb0undary"), st.binary(min_size=1, max_size=80).filter(lambda b: b"\r" not in b))
names = st.one_of(st.sampled_from([b"sdp", b"session", b"model", b""]), st.binary(max_size=12))
contents = st.one_of(st.just(b"v=0\r\n"), st.just(b'{"type":"realtime"}'), st.just(b"[1]"),
                     st.binary(max_size=200), st.text(max_size=200).map(str.encode))


@st.composite
def forms(draw) -> bytes:
    """One POST /calls with a multipart/form-data body of drawn parts, maybe cut or mutated."""
    boundary = draw(boundaries)
    body = b""
    for name, content in draw(st.lists(st.tuples(names, contents), max_size=4)):
        body += (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"" + name + b"\"\r\n\r\n"
                 + content + b"\r\n")
    body += b"--" + boundary + b"--\r\n"
    if draw(st.booleans()) and body:
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.binary(max_size=20)) + body[cut + draw(st.integers(0, 10)):]
    content_type = draw(st.sampled_from([b"multipart/form-data; boundary=" + boundary, b"multipart/form-data",
                                         b"multipart/form-data; boundary=\"" + boundary + b"\"",
                                         b"multipart/mixed; boundary=" + boundary, b"application/sdp"]))
    return (b"POST /calls HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\nContent-Type: " + content_type
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(forms())
async def test_any_call_body_gets_the_offer_or_a_problem(calls, request_bytes):
    status, answer = await exchange(calls, request_bytes)
    assert status in (200, 400, 413, 415), answer[:300]
    if status == 200:
        read = json.loads(answer)
        assert read["session"] == "" or isinstance(json.loads(read["session"]), dict)


messages = st.one_of(st.text(max_size=300), st.binary(max_size=300),
                     st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4).map(json.dumps),
                     st.text(max_size=20).map(lambda kind: json.dumps({"type": kind})))


@given(st.lists(messages, max_size=20))
def test_any_data_channel_message_is_passed_on_whole_or_answered_with_one_error(batch):
    counters: Counter[str] = Counter()
    events = RealtimeEvents(counters, lambda: 0.0)
    to_caller: list[str] = []
    to_agent: list[str] = []
    events.caller_open(to_caller.append)
    events.agent_open(to_agent.append)
    for message in batch:
        before = (len(to_caller), len(to_agent))
        events.from_caller(message)
        passed, answered = len(to_agent) - before[1], len(to_caller) - before[0]
        assert (passed, answered) in ((1, 0), (0, 1)), message
        if passed:
            assert parse_json_event(to_agent[-1])["type"]
        else:
            assert json.loads(to_caller[-1])["type"] == "error"
        try:
            events.from_agent(message if isinstance(message, str) else message.decode("utf-8", "replace"))
        except BadJsonEvent:
            pytest.fail("from_agent raised")
