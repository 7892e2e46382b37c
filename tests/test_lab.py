"""The lab as root (voicemesh/app/lab/): the two-region smoke lab from the command line, teardown after a
failure, and headless Chromium calling through the geo name from a client city's namespace. Its plan and
models without namespaces are in tests/test_lab_plan.py."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voicemesh.app.demo import bundled_speech
from voicemesh.app.lab import report
from voicemesh.app.lab.plan import PREFIX, LabError, load_topology, plan
from voicemesh.app.lab.runner import Lab

pytestmark = pytest.mark.system

TOPOLOGY = load_topology()
CHROMIUM = "/usr/bin/chromium"


# -- as root: the lab itself ------------------------------------------------------------------------

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or not Path("/dev/net/tun").exists(),
    reason="the lab needs root (network namespaces), iproute2's ip and /dev/net/tun")


def lab_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


@needs_netns
def test_smoke_lab_with_two_regions_steers_each_city_and_survives_a_region_failure() -> None:
    """Two regions, each with its own etcd; then us-east (transceiver and etcd) dies and New York's new call
    goes to eu-central."""
    proc = subprocess.run([sys.executable, "-m", "voicemesh", "lab", "run", "--regions", "2", "--duration", "4",
                           "--fail-region", "us-east", "--json"], capture_output=True, text=True, timeout=400)
    assert proc.stdout.strip(), proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr
    assert [c["city"] for c in result["cities"]] == ["berlin", "new-york"]
    for row in result["cities"]:
        assert row["edge"] == row["nearest_edge"], row
        for mode in ("mesh", "direct"):
            assert row[mode]["ok"] and row[mode]["packets_received"] > 100, row
            assert set(report.MILESTONES) <= set(row[mode]["setup_ms"]), row
    assert [(c["mesh"]["region"], c["direct"]["region"]) for c in result["cities"]] == [
        ("eu-central", "eu-central"), ("us-east", "eu-central")]
    [moved] = result["failover"]
    assert (moved["city"], moved["from_region"], moved["to_region"], moved["ok"]) == (
        "new-york", "us-east", "eu-central", True), moved
    assert moved["audio_rtt_ms"] is not None and "answer" in moved["setup_ms"]
    assert result["wan"]["forwarded"] > 0 and result["wan"]["drops"].get("unknown_destination", 0) == 0
    assert lab_namespaces() == []


@needs_netns
async def test_a_lab_that_fails_to_start_leaves_nothing_behind() -> None:
    broken = copy.deepcopy(TOPOLOGY)
    broken["ports"]["transceiver_http"] = 70000
    with pytest.raises(LabError) as failed:
        async with Lab(plan(broken, regions=1, cities=["berlin"])):
            pass
    assert failed.value.reason == "start_failed" and "transceiver" in str(failed.value)
    assert lab_namespaces() == [] and not list(Path("/etc/netns").glob(PREFIX + "*"))


@needs_netns
def test_lab_down_removes_leftover_namespaces() -> None:
    subprocess.run(["ip", "netns", "add", f"{PREFIX}leftover"], check=True)
    proc = subprocess.run([sys.executable, "-m", "voicemesh", "lab", "down"], capture_output=True, text=True)
    assert proc.returncode == 0 and f"{PREFIX}leftover" in proc.stdout
    assert lab_namespaces() == []


@needs_netns
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed: apt-get install chromium")
async def test_chromium_calls_through_the_geo_name_from_a_client_city() -> None:
    lab = plan(TOPOLOGY, regions=2, cities=["new-york"])
    async with Lab(lab) as running:
        result = await running.browser_call(lab.cities[0], 4, bundled_speech())
    assert result["ok"], result
    assert result["edge"] == lab.nearest_edge(lab.cities[0]) == "edge-iad"
    assert result["dtls_state"] == "connected"
    assert result["inbound"]["packets_received"] > 100 and result["inbound"]["total_audio_energy"] > 0
    assert lab_namespaces() == []
