"""The edge's telemetry: relay metrics read from its counters, and each flow's first packet in its session's trace.

Neither adds work per packet: metrics are observed from ``Relay.stats()``
as the event loop last took it, and a flow is matched to its session once, when
the relay learns it, by the server ufrag that the session's answer carried.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions
from opentelemetry.trace import NonRecordingSpan, SpanContext

from voicemesh.edge.flows import Flow
from voicemesh.edge.relay import Relay
from voicemesh.runtime import telemetry

_UFRAG = re.compile(rb"^a=ice-ufrag:(\S+)", re.MULTILINE)


class FlowTracer:
    """Remembers which session each answered server ufrag belongs to, for ``ttl_s`` seconds.

    ``expect`` is fed the answers passing through the WHIP front;
    ``on_flow`` (the relay's hook) records a ``relay flow`` span in the
    session's trace for every flow that ufrag opens (a NAT rebinding opens a
    second one), with the state it opened in (provisional or pending). At
    most ``max_pending`` ufrags are kept, oldest dropped first.
    """

    def __init__(self, edge_id: int, ttl_s: float = 60.0, max_pending: int = 100_000) -> None:
        self.edge_id = edge_id
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._pending: OrderedDict[bytes, tuple[float, str, SpanContext]] = OrderedDict()

    def expect(self, answer_sdp: bytes, session_id: str, span_context: SpanContext) -> None:
        """Note the answer's ``a=ice-ufrag`` (RFC 8839 5.4) as belonging to ``session_id``."""
        match = _UFRAG.search(answer_sdp)
        if match is None or not span_context.is_valid:
            return
        now = time.monotonic()
        self._pending[match.group(1)] = (now, session_id, span_context)
        while self._pending:
            ufrag, (at, _, _) = next(iter(self._pending.items()))
            if now - at < self.ttl_s and len(self._pending) <= self.max_pending:
                break
            del self._pending[ufrag]

    def on_flow(self, flow: Flow) -> None:
        """Record the new ``flow`` (opened by a Binding request for ``flow.ufrag``) in its session's trace."""
        entry = self._pending.get(flow.ufrag)
        if entry is None:
            return
        _, session_id, span_context = entry
        parent = trace.set_span_in_context(NonRecordingSpan(span_context))
        telemetry.tracer().start_span("relay flow", context=parent, attributes={
            telemetry.SESSION_ID: session_id,
            telemetry.EDGE_ID: self.edge_id,
            "client.address": flow.client[0],
            "client.port": flow.client[1],
            "voicemesh.transceiver.address": f"{flow.transceiver[0]}:{flow.transceiver[1]}",
            "voicemesh.flow.state": str(flow.state),
            "network.transport": flow.transport,
        }).end()


RELAY_METRICS = {
    "voicemesh.relay.packets": ("{packet}", "datagrams (and ICE-TCP packets) forwarded"),
    "voicemesh.relay.bytes": ("By", "payload bytes forwarded"),
    "voicemesh.relay.unproven_bytes": ("By", "bytes from and to client addresses that have not answered a check"),
    "voicemesh.relay.drops": ("{packet}", "datagrams (and ICE-TCP packets) dropped, by reason"),
    "voicemesh.relay.flows": ("{flow}", "active relay flows"),
    "voicemesh.relay.tcp.connections": ("{connection}", "open ICE-TCP connections"),
}
"""The relay's metrics: name -> (unit, description). The last two are gauges, the rest counters."""


def relay_observations(stats: dict[str, Any], attributes: dict[str, str]) -> dict[str, list[tuple[int, dict[str, str]]]]:
    """The value and attributes of every observation of each RELAY_METRICS metric, from ``Relay.stats()``:
    packets, bytes, drops and flows by ``network.transport`` (``udp``, ``tcp``: the client's, RFC 6544),
    packets and bytes also by ``network.io.direction`` (``receive`` from clients, ``transmit`` to them),
    drops also by ``voicemesh.drop.reason`` (backbone frames' drops count as ``udp``, the relay's own)."""
    out: dict[str, list[tuple[int, dict[str, str]]]] = {name: [] for name in RELAY_METRICS}
    directions = (("receive", "_in"), ("transmit", "_out"))
    for direction, suffix in directions:
        out["voicemesh.relay.unproven_bytes"].append(
            (stats["unproven_bytes" + suffix], {**attributes, "network.io.direction": direction}))
    for transport, counts in stats["by_transport"].items():
        tagged = {**attributes, "network.transport": transport}
        for direction, suffix in directions:
            where = {**tagged, "network.io.direction": direction}
            out["voicemesh.relay.packets"].append((counts["packets" + suffix], where))
            out["voicemesh.relay.bytes"].append((counts["bytes" + suffix], where))
        out["voicemesh.relay.drops"] += [(n, {**tagged, "voicemesh.drop.reason": reason})
                                         for reason, n in counts["drops"].items()]
        out["voicemesh.relay.flows"].append((counts["flows"], tagged))
    if "connections" in stats["by_transport"]["tcp"]:
        out["voicemesh.relay.tcp.connections"].append((stats["by_transport"]["tcp"]["connections"], attributes))
    return out


def observe_relay(relay: Relay, attributes: dict[str, str]) -> telemetry.Snapshot[dict[str, Any]]:
    """Register the relay's metrics (RELAY_METRICS, observed as relay_observations says).

    The callbacks read ``Relay.stats()`` as the event loop last took it (telemetry.Snapshot: the
    metric reader's thread never touches the relay's tables). Returns the snapshot, started; close
    it with the relay.
    """
    meter = telemetry.meter()
    stats = telemetry.Snapshot(relay.stats)
    stats.start()

    def callback(name: str) -> Callable[[CallbackOptions], list[metrics.Observation]]:
        def observe(_options: CallbackOptions) -> list[metrics.Observation]:
            return [metrics.Observation(value, attrs)
                    for value, attrs in relay_observations(stats.value, attributes)[name]]
        return observe

    for name, (unit, description) in RELAY_METRICS.items():
        create = meter.create_observable_gauge if name in ("voicemesh.relay.flows", "voicemesh.relay.tcp.connections") \
            else meter.create_observable_counter
        create(name, unit=unit, description=description, callbacks=[callback(name)])
    return stats
