"""JSON events on the agent link (agent.proto JsonEvent), sans-IO: the one check every hop makes.

A JSON event is one JSON object with a string ``type``, as the OpenAI Realtime API's client and server
events are, in UTF-8 of at most MAX_JSON_EVENT_BYTES. The caller's data channel, the transceiver and the
SDK all apply ``parse_json_event``; what fails it is dropped and counted by its ``reason``.
"""

from __future__ import annotations

import json
from typing import Any

MAX_JSON_EVENT_BYTES = 64 * 1024
"""Largest JSON event (bytes of UTF-8) either way. aiortc's SCTP takes messages up to 64 KiB, which bounds
what a caller can send on its data channel anyway; an OpenAI ``session.update`` with long instructions fits."""


class BadJsonEvent(ValueError):
    """A JSON event that does not hold. ``reason`` is a counter label: ``too_large``, ``not_utf8``,
    ``not_json`` (also: nested deeper than the parser's recursion limit), ``not_object`` or ``no_type``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_json_event(data: str | bytes) -> dict[str, Any]:
    """The event ``data`` (JSON text, or its UTF-8 bytes) as a dict with a string ``type``.

    Raises BadJsonEvent (see its reasons). Sizes are counted in UTF-8 bytes, before parsing.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > MAX_JSON_EVENT_BYTES:
        raise BadJsonEvent("too_large", f"the event is {len(raw)} bytes; the limit is {MAX_JSON_EVENT_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadJsonEvent("not_utf8", "the event is not UTF-8 text") from None
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        raise BadJsonEvent("not_json", "the event is not JSON") from None
    if not isinstance(event, dict):
        raise BadJsonEvent("not_object", "the event must be a JSON object")
    if not isinstance(event.get("type"), str) or not event["type"]:
        raise BadJsonEvent("no_type", 'the event has no string "type"')
    return event

