"""OpenTelemetry for every voicemesh process: traces and metrics over OTLP/gRPC, off when unconfigured.

``setup(service)`` installs the SDK only when the standard variables name an
endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` or the per-signal
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``..._METRICS_ENDPOINT``); the
exporters read the rest of the standard ``OTEL_*`` settings themselves.
Otherwise the API stays a no-op and costs nothing. Names follow the
OpenTelemetry semantic conventions (``http.*``, ``server.*``, ``client.*``)
and ``voicemesh.*`` otherwise. The trace context crosses process hops as a
W3C ``traceparent`` (in HTTP headers, and in the agent stream's SessionStart).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context

TRACER_NAME = "voicemesh"

SESSION_ID = "voicemesh.session.id"
EDGE_ID = "voicemesh.edge.id"
REGION = "voicemesh.region"
NODE_ID = "voicemesh.node.id"

SNAPSHOT_INTERVAL_S = 1.0
"""How often (s) the event loop refreshes what observable metrics report (see Snapshot)."""

_providers: list[Any] = []

T = TypeVar("T")


def enabled() -> bool:
    """Whether an OTLP endpoint is configured in the environment."""
    return any(os.environ.get(v) for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                                           "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))


def setup(service: str, attributes: Mapping[str, str] | None = None) -> bool:
    """Install tracer and meter providers exporting over OTLP/gRPC as ``service.name`` = ``service``.

    Returns False (and changes nothing) if no endpoint is configured. Call once per process.
    """
    if not enabled() or _providers:
        return bool(_providers)
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": service, "service.namespace": "voicemesh", **(attributes or {})})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    meter_provider = MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _providers.extend([tracer_provider, meter_provider])
    return True


def shutdown() -> None:
    """Flush and stop the exporters (at process exit; spans still in memory are sent)."""
    for provider in _providers:
        provider.shutdown()
    _providers.clear()


def tracer() -> trace.Tracer:
    """The voicemesh tracer (a no-op unless ``setup`` installed the SDK)."""
    return trace.get_tracer(TRACER_NAME)


def meter() -> metrics.Meter:
    """The voicemesh meter (a no-op unless ``setup`` installed the SDK)."""
    return metrics.get_meter(TRACER_NAME)


def inject(context: Context | None = None) -> dict[str, str]:
    """W3C trace context headers (``traceparent``, ``tracestate``) for ``context`` (default: current)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier


def extract(carrier: Mapping[str, str]) -> Context:
    """The context carried by ``traceparent`` headers (an empty context if none)."""
    return propagate.extract(carrier)


def start_agent_span(session_id: str, traceparent: str, agent: str) -> trace.Span:
    """The ``agent session`` span of one call in an agent, a child of the transceiver's ``session`` span
    (its ``traceparent`` arrives in the agent stream's SessionStart). End it when the session ends."""
    return tracer().start_span("agent session", context=extract({"traceparent": traceparent}),
                               kind=trace.SpanKind.SERVER,
                               attributes={SESSION_ID: session_id, "voicemesh.agent.name": agent})


def trace_id(span: trace.Span) -> str:
    """The span's trace id as 32 hex digits ("" if the span is not recording a valid context)."""
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def server_spans(skip: frozenset[str] = frozenset({"/v1/status"})):
    """aiohttp middleware: one SERVER span per request, continuing the caller's ``traceparent``.

    Span name ``"<method> <route>"`` and the HTTP semantic-convention
    attributes; a 5xx response marks the span as an error. Routes in
    ``skip`` (health and status polls) are not traced.
    """
    from aiohttp import web
    from opentelemetry.trace import SpanKind, StatusCode

    @web.middleware
    async def middleware(request: web.Request, handler):
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
        if route in skip:
            return await handler(request)
        host, _, port = (request.host or "").partition(":")
        attributes: dict[str, str | int] = {
            "http.request.method": request.method,
            "http.route": route,
            "url.path": request.path,
            "url.scheme": request.scheme,
            "client.address": request.remote or "",
            "server.address": host,
            "network.protocol.version": f"{request.version.major}.{request.version.minor}",
        }
        if port.isdigit():
            attributes["server.port"] = int(port)
        with tracer().start_as_current_span(f"{request.method} {route}", kind=SpanKind.SERVER,
                                            context=extract(request.headers), attributes=attributes) as span:
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(StatusCode.ERROR)
            return response

    return middleware


class Snapshot(Generic[T]):
    """A value the event loop takes every ``interval_s`` seconds, for observable metric callbacks.

    OpenTelemetry calls observable instruments' callbacks on its metric reader's thread. Iterating
    there a dict that the event loop is changing can raise RuntimeError or see half an update, so
    callbacks read ``value`` only: the latest result of ``take()``, which runs on the loop and must
    return a value nobody changes afterwards (a tuple, a number, a freshly built dict), swapped in
    by one attribute store. Metrics are thus at most ``interval_s`` old. ``start()`` (on the loop)
    refreshes only while ``setup`` has installed the SDK, so it costs nothing otherwise;
    ``close()`` stops it.
    """

    def __init__(self, take: Callable[[], T], interval_s: float = SNAPSHOT_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.value: T = take()
        self._take = take
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Take the value now and every ``interval_s`` on the running loop (if telemetry is set up)."""
        if _providers:
            self._refresh()

    def close(self) -> None:
        """Stop refreshing; ``value`` keeps the last one taken."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refresh(self) -> None:
        self.value = self._take()
        self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._refresh)
