"""The Janus anchor of ``make bench`` (bench/janus.py, bench/load_client.py --janus): Debian's janus answers in
its network namespace and one EchoTest session set up over its HTTP API echoes the caller's packets; the
namespace and its veth pair are gone afterwards."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# By path: bench/ on sys.path would let bench/dns.py shadow dnspython for the rest of the session.
_spec = importlib.util.spec_from_file_location("bench_janus", REPO / "bench" / "janus.py")
janus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(janus)

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(os.geteuid() != 0, reason="Janus runs in a network namespace: needs root")]


def test_janus_echotest_answers_and_echoes_one_session(tmp_path: Path) -> None:
    name = f"vmjt-{os.getpid()}"
    with janus.JanusNetns(name, f"vmjt{os.getpid()}") as netns, janus.Janus(netns, tmp_path, "0-1") as server:
        argv = netns.exec([sys.executable, "-P", str(REPO / "bench" / "load_client.py"), "--janus", janus.URL,
                           "--bind", janus.CLIENT_IP, "--n", "1", "--settle", "0.5", "--window", "2",
                           "--pid", f"janus={server.pid}"])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (done.stderr[-3000:], server.log_tail())
        window = json.loads(done.stdout.strip().splitlines()[-1])
        assert server.running(), server.log_tail()
    assert window["connected"] == 1 and window["errors"] == []
    assert window["sent"] > 0 and window["received"] > 0 and window["first_audio_minus_dtls_ms_p50"] is not None
    assert window["cpu_pct"]["janus"] >= 0 and window["rss_mb"]["janus"] > 0
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
