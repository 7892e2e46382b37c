"""gRPC core's experiments a voicemesh process runs with (voicemesh.GRPC_EXPERIMENTS): set before gRPC is
first imported through the entry points (the ``voicemesh`` command, an agent script on the SDK, the
transceiver's agent link), since gRPC reads them only then; an operator's own GRPC_EXPERIMENTS is kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import voicemesh

pytestmark = pytest.mark.integration

# Runs in a fresh interpreter: prints GRPC_EXPERIMENTS as it is when ``grpc`` is first imported (or, if
# importing the module does not import grpc, as it is after: what grpc sees when a command imports it).
PROBE = """
import os, sys

class Probe:
    def find_spec(self, name, path=None, target=None):
        if name == "grpc":
            print(repr(os.environ.get("GRPC_EXPERIMENTS")))
            sys.meta_path.remove(self)
        return None

probe = Probe()
sys.meta_path.insert(0, probe)
import {module}
if probe in sys.meta_path:
    print(repr(os.environ.get("GRPC_EXPERIMENTS")))
"""


def _experiments_at_grpc_import(module: str, env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    if env_value is not None:
        env["GRPC_EXPERIMENTS"] = env_value
    result = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout.strip()


@pytest.mark.parametrize("module", ["voicemesh.app.cli", "voicemesh.agent.sdk", "voicemesh.core.agent_link"])
def test_the_experiments_are_set_before_grpc_is_first_imported(module: str) -> None:
    assert _experiments_at_grpc_import(module, None) == repr(voicemesh.GRPC_EXPERIMENTS)


def test_an_operators_grpc_experiments_are_kept_even_empty() -> None:
    assert _experiments_at_grpc_import("voicemesh.app.cli", "") == repr("")
    assert _experiments_at_grpc_import("voicemesh.app.cli", "-tcp_rcv_lowat") == repr("-tcp_rcv_lowat")
