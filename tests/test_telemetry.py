"""One trace per call, edge to agent, as an OTLP receiver sees it; and the metrics an SRE alerts on.

The parts run as their own processes against a real etcd and export through
the real OTLP/gRPC exporter to a receiver the test starts.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
from collections import Counter

import pytest
from otlp_sink import OtlpSink
from procs import VOICEMESH, free_ports, wait_http

from voicemesh.app.demo import bundled_speech

pytestmark = pytest.mark.system


@pytest.fixture
def sink():
    sink = OtlpSink()
    sink.start()
    yield sink
    sink.stop()


def attrs(span) -> dict:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


def test_a_call_is_one_trace_from_edge_to_agent(etcd, processes, sink) -> None:
    env = {"VOICEMESH_TOKEN_KEYS": f"1:{secrets.token_hex(32)}", "VOICEMESH_REGISTRY": etcd.url,
           "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true",
           "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_METRIC_EXPORT_INTERVAL": "500"}
    agent_port, trx_port, edge_port = free_ports(3)
    agent = processes("agent", "--bind", f"127.0.0.1:{agent_port}", env=env)
    trx = processes("transceiver", "--http", f"127.0.0.1:{trx_port}", "--agent", f"127.0.0.1:{agent_port}",
                    "--backbone", "127.0.0.1:0", env=env)
    wait_http(f"http://127.0.0.1:{trx_port}/v1/status", trx, lambda b: b["node"] is not None)
    edge = processes("edge", "--public", "127.0.0.1:0", "--http", f"127.0.0.1:{edge_port}", env=env)
    wait_http(f"http://127.0.0.1:{edge_port}/v1/status", edge)

    result = subprocess.run([*VOICEMESH, "call", f"http://127.0.0.1:{edge_port}/v1/sessions", "--wav",
                             bundled_speech(), "--bind", "127.0.0.1", "--json"], capture_output=True, timeout=60)
    report = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert report["ok"], report
    for proc in (edge, trx, agent):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0

    session_id = report["session_id"]
    calls = [s for _, s in sink.spans if attrs(s).get("voicemesh.session.id") == session_id]
    trace_ids = {s.trace_id for s in calls}
    assert len(trace_ids) == 1, "one trace per call"
    spans = [(service, s) for service, s in sink.spans if s.trace_id in trace_ids]
    by_name = {(service, s.name): s for service, s in spans}

    root = by_name[("voicemesh-edge", "POST /v1/sessions")]
    forward = by_name[("voicemesh-edge", "POST")]
    trx_server = by_name[("voicemesh-transceiver", "POST /v1/sessions")]
    session = by_name[("voicemesh-transceiver", "session")]
    claim = by_name[("voicemesh-transceiver", "registry claim")]
    flow = by_name[("voicemesh-edge", "relay flow")]
    assert root.parent_span_id == b""
    assert forward.parent_span_id == root.span_id
    assert trx_server.parent_span_id == forward.span_id
    assert session.parent_span_id == trx_server.span_id
    assert claim.parent_span_id == session.span_id
    assert flow.parent_span_id == root.span_id
    assert attrs(root)["http.response.status_code"] == 201
    assert attrs(root)["http.request.method"] == "POST"
    assert attrs(session)["voicemesh.session.end_reason"] == "deleted"
    assert attrs(flow)["client.address"] == "127.0.0.1"
    events = [e.name for e in session.events]
    assert {"ice connected", "dtls connected", "first audio to agent", "first audio from agent"} <= set(events)
    agent_span = by_name[("voicemesh-agent", "agent session")]
    assert agent_span.parent_span_id == session.span_id

    logs = [json.loads(line) for line in trx.stderr.read().decode().splitlines() if line.startswith("{")]
    session_logs = [line for line in logs if line.get("session_id") == session_id]
    assert session_logs and all(line["trace_id"] == root.trace_id.hex() for line in session_logs)

    assert {"voicemesh.relay.packets", "voicemesh.relay.bytes", "voicemesh.relay.flows"} <= sink.metrics["voicemesh-edge"]
    assert {"voicemesh.sessions", "voicemesh.session.setup.duration", "voicemesh.agent.latency",
            "voicemesh.session.network_rtt"} <= sink.metrics["voicemesh-transceiver"]
    assert Counter(service for service, _ in spans)["voicemesh-edge"] >= 3
