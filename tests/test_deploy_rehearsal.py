"""The deploy rehearsal (tools/rehearsal, make deploy-rehearsal): every host of the two-region topology
fixture, rendered by Terraform, booted as network namespaces running the units' own commands; a call
through the geo name from a client near each PoP, an etcd member's host replaced (member add, existing),
a snapshot, a transceiver host lost and replaced by its group, the region's etcd restored from that snapshot
by infra/README.md's runbook, and calls after each. Its namespaces carry the run's process id (``rhs-<pid>-``)
and are gone when it ends, even when it is stopped at the timeout."""

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


def namespaces(prefix: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    etc = [p.name for p in Path("/etc/netns").iterdir()] if Path("/etc/netns").is_dir() else []
    return sorted(name for name in listed + etc if name.startswith(prefix))


def test_the_rendered_two_region_mesh_places_calls_and_heals_itself():
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "rehearsal" / "run.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=2400)
    except subprocess.TimeoutExpired:
        proc.terminate()  # run.py tears its namespaces down on SIGTERM
        stdout, stderr = proc.communicate(timeout=300)
    assert namespaces(f"rhs-{proc.pid}-") == []
    lines = stdout.strip().splitlines()
    assert proc.returncode in (0, 1) and lines, (stdout + stderr)[-6000:]
    result = json.loads(lines[-1])
    steps = {s["step"]: s for s in result["steps"]}
    assert result["ok"], stdout[-6000:]
    assert result["namespaces"] == f"rhs-{proc.pid}"
    assert {"call from berlin through the geo name", "call from new-york through the geo name",
            "etcd member replaced (member add, existing)", "etcd snapshot (the snapshot unit)",
            "transceiver replaced and registered", "call after recovery",
            "etcd restored from its S3 snapshot (runbook steps 1-5)",
            "registry init after the restore (runbook step 6), nodes registered again, each on its own index",
            "users of a host terminated since the snapshot removed again (runbook step 7)",
            "transceiver host terminated and retired (its etcd users removed in every cluster)",
            "call after the restore"} <= set(steps)
    berlin, new_york = steps["call from berlin through the geo name"], steps["call from new-york through the geo name"]
    assert berlin["resolved"] != new_york["resolved"]  # each caller is sent to the PoP nearest to it
    substitution = result["substitution"]
    assert substitution["files_differing_from_user_data"] == {}
    assert substitution["docker"]["arguments_unchanged"]
    assert set(substitution["docker"]["dropped"]) <= {"--bump-revision", "--mark-compacted"}  # not in etcd 3.4
    assert set(substitution["docker"]["image_to_local"].values()) <= {
        str(Path(sys.executable).parent / "voicemesh"), "/usr/bin/etcd", "/usr/bin/etcdctl"}
