"""The deploy rehearsal (tools/rehearsal, make deploy-rehearsal): every host of the two-region topology
fixture, rendered by Terraform, booted as network namespaces running the units' own commands; a call
through the geo name from a client near each PoP, an etcd member's host replaced (member add, existing),
a snapshot, a transceiver host lost and replaced by its group, and calls after each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_files import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import terraform as terraform_cli

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="the rehearsal creates network namespaces and mounts: root only"),
    pytest.mark.skipif(terraform_cli.provider_mirror() is None,
                       reason="no filesystem mirror of hashicorp/aws (TF_PLUGIN_MIRROR or /opt/tf-plugins)"),
]


def test_the_rendered_two_region_mesh_places_calls_and_heals_itself():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "rehearsal" / "run.py")], capture_output=True,
                          text=True, timeout=2400)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    steps = {s["step"]: s for s in result["steps"]}
    assert result["ok"], proc.stdout[-6000:]
    assert {"call from berlin through the geo name", "call from new-york through the geo name",
            "etcd member replaced (member add, existing)", "etcd snapshot (the snapshot unit)",
            "transceiver replaced and registered", "call after recovery"} <= set(steps)
    berlin, new_york = steps["call from berlin through the geo name"], steps["call from new-york through the geo name"]
    assert berlin["resolved"] != new_york["resolved"]  # each caller is sent to the PoP nearest to it
    substitution = result["substitution"]
    assert substitution["files_differing_from_user_data"] == {}
    assert substitution["docker"]["arguments_unchanged"]
    assert set(substitution["docker"]["image_to_local"].values()) <= {
        str(Path(sys.executable).parent / "voicemesh"), "/usr/bin/etcd", "/usr/bin/etcdctl"}
