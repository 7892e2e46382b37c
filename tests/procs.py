"""Helpers for tests that run parts of voicemesh as their own processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

VOICEMESH = [sys.executable, "-m", "voicemesh"]


def harness_figures(module: str, timeout_s: float) -> dict:
    """Run ``python -m <module> --quick`` (bench.attack, bench.faults) from the repository and return its
    last line, a JSON object; fails the test with the harness's stderr if it exits non-zero."""
    repo = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-m", module, "--quick"], cwd=repo, capture_output=True, timeout=timeout_s)
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback TCP ports that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_http(url: str, proc: subprocess.Popen, ready=lambda body: True, deadline_s: float = 20.0) -> dict:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}: {proc.stderr.read().decode()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                body = json.loads(resp.read())
                if ready(body):
                    return body
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready")


