"""A minimal OTLP/gRPC receiver for tests: real exporters, real gRPC, real protobuf wire format.

It keeps every span and metric it is sent, so tests can assert the span tree
of a real call.
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as mpbg
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tpbg


class OtlpSink(tpbg.TraceServiceServicer, mpbg.MetricsServiceServicer):
    """Spans as ``(service.name, Span)`` pairs and metric names by service."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        self.metrics: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        tpbg.add_TraceServiceServicer_to_server(self, self._server)
        mpbg.add_MetricsServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(0)

    def Export(self, request, context):
        with self._lock:
            if isinstance(request, tpb.ExportTraceServiceRequest):
                for rs in request.resource_spans:
                    service = _service(rs.resource)
                    self.spans.extend((service, span) for ss in rs.scope_spans for span in ss.spans)
                return tpb.ExportTraceServiceResponse()
            for rm in request.resource_metrics:
                names = self.metrics.setdefault(_service(rm.resource), set())
                names.update(m.name for sm in rm.scope_metrics for m in sm.metrics)
            return mpb.ExportMetricsServiceResponse()


def _service(resource) -> str:
    return next((a.value.string_value for a in resource.attributes if a.key == "service.name"), "")
