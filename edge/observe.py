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
        }).end()


def observe_relay(relay: Relay, attributes: dict[str, str]) -> telemetry.Snapshot[dict[str, Any]]:
    """Register the relay's metrics: packets, bytes, unproven bytes and drops (by reason) as counters, flows
    as a gauge.

    The callbacks read ``Relay.stats()`` as the event loop last took it (telemetry.Snapshot: the
    metric reader's thread never touches the relay's tables). Returns the snapshot, started; close
    it with the relay.
    """
    meter = telemetry.meter()
    stats = telemetry.Snapshot(relay.stats)
    stats.start()

    def counter(key: str, direction: str) -> Callable[[CallbackOptions], list[metrics.Observation]]:
        def observe(_options: CallbackOptions) -> list[metrics.Observation]:
            return [metrics.Observation(stats.value[key], {**attributes, "network.io.direction": direction})]
        return observe

    meter.create_observable_counter("voicemesh.relay.packets", unit="{packet}", description="datagrams forwarded",
                                    callbacks=[counter("packets_in", "receive"), counter("packets_out", "transmit")])
    meter.create_observable_counter("voicemesh.relay.bytes", unit="By", description="payload bytes forwarded",
                                    callbacks=[counter("bytes_in", "receive"), counter("bytes_out", "transmit")])
    meter.create_observable_counter(
        "voicemesh.relay.unproven_bytes", unit="By",
        description="bytes from and to client addresses that have not answered a check (pending flows)",
        callbacks=[counter("unproven_bytes_in", "receive"), counter("unproven_bytes_out", "transmit")])
    meter.create_observable_counter(
        "voicemesh.relay.drops", unit="{packet}", description="datagrams dropped, by reason",
        callbacks=[lambda _o: [metrics.Observation(n, {**attributes, "voicemesh.drop.reason": reason})
                               for reason, n in stats.value["drops"].items()]])
    meter.create_observable_gauge(
        "voicemesh.relay.flows", unit="{flow}", description="active relay flows",
        callbacks=[lambda _o: [metrics.Observation(stats.value["flows"], attributes)]])
    return stats
