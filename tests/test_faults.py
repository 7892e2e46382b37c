"""The faults of issue 11 against real processes on loopback (`python -m bench.faults --quick`), the offer burst,
and the soak (`python -m bench.faults.soak --quick`), and their goals.

One run of the harness serves every test here: each fault gets a fresh mesh (etcd with TLS and auth,
transceiver, agents, an edge behind a hop that timestamps the echo off the wire) and one call carrying speech
both ways, with the fault injected mid-call. Tests assert on kept calls, statuses, claims and counters, never on
time (the harness reports the gaps and recovery times: README "Failure behaviour"). A test marked xfail is a
fault whose fix has not landed on this tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voicemesh.app.lab.browser import CHROMIUM

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not found: apt-get install etcd-server")]


def not_merged(rule: str):
    return pytest.mark.xfail(strict=True, reason=f"issue 11: {rule} not merged yet")


@pytest.fixture(scope="module")
def faults() -> dict:
    """The harness's last line: per-fault figures."""
    result = subprocess.run([sys.executable, "-m", "bench.faults", "--quick"], cwd=REPO, capture_output=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    return json.loads(result.stdout.decode().strip().splitlines()[-1])["faults"]


def fault(faults: dict, name: str) -> dict:
    """One fault's figures, after checking that it ran and placed its call."""
    found = faults[name]
    assert found["error"] is None, found["error"]
    assert found["calls"] == 1
    return found


def test_an_etcd_outage_of_three_lease_ttls_keeps_the_call_without_an_audio_gap(faults) -> None:
    etcd = fault(faults, "etcd_freeze")
    assert etcd["kept"] == 1, etcd["call_error"]
    assert etcd["longest_audio_gap_ms"] < 500, "audio went on through the outage"
    assert "drops.tx_error" not in etcd["counters"]["edge"]


def test_offers_during_an_etcd_outage_get_503_with_retry_after(faults) -> None:
    etcd = fault(faults, "etcd_freeze")
    assert etcd["offer_during_outage"] == 503
    assert int(etcd["offer_retry_after"]) > 0


def test_after_an_etcd_outage_the_live_session_is_claimed_again_and_delete_through_the_edge_works(faults) -> None:
    etcd = fault(faults, "etcd_freeze")
    assert etcd["claims_before"] == 1 and etcd["reclaimed"] and etcd["claims_after"] == 1
    assert etcd["deleted_through_edge"]


def test_the_geo_dns_keeps_answering_through_an_etcd_outage(faults) -> None:
    etcd = fault(faults, "etcd_freeze")
    assert etcd["dns_answers_before"] > 0
    assert etcd["dns_empty_after"] == 0


def test_a_restarted_agent_gets_its_call_back(faults) -> None:
    agent = fault(faults, "agent_restart")
    assert agent["kept"] == 1, agent["call_error"]
    assert agent["recovery_s"] is not None, "the echo resumed after the agent listened again"


def test_a_dead_registry_agents_call_moves_to_another_agent(faults) -> None:
    agent = fault(faults, "agent_failover")
    assert agent["kept"] == 1, agent["call_error"]
    assert agent["longest_audio_gap_ms"] < 2500, "well before the dead agent's lease (5 s) expires"


def test_a_restarted_edge_drops_no_media_of_its_live_call(faults) -> None:
    edge = fault(faults, "edge_restart")
    assert edge["kept"] == 1, edge["call_error"]
    assert edge["counters"]["edge"].get("drops.not_stun", 0) == 0
    assert edge["counters"]["edge"]["flows_vouched"] == 1, "the transceiver vouched for the live flow"


def test_a_hitless_edge_upgrade_keeps_the_call_and_the_old_process_hands_over(faults) -> None:
    edge = fault(faults, "edge_upgrade")
    assert edge["kept"] == 1, edge["call_error"]
    assert edge["old_exit_code"] == 0
    assert edge["record_after"] == {"edge_id": edge["record_after"]["edge_id"], "draining": False}, \
        "the old process handed over: it did not mark the node draining over the new process's record"
    assert edge["record_after"]["edge_id"] != edge["old_edge_id"]
    assert edge["counters"]["edge"]["flows_vouched"] == 1
    assert edge["counters"]["edge"].get("drops.not_stun", 0) == 0


def test_a_call_on_a_crashed_transceiver_is_redialled_and_resumes_on_a_survivor(faults) -> None:
    """Kept here means re-dialled and audio resumed: the caller (``voicemesh call --redial``) noticed the
    silence, posted a new offer through the same name, the edge placed it on the surviving transceiver, and
    the echo came back to the call's end."""
    transceiver = fault(faults, "transceiver_kill")
    assert transceiver["kept"] == 1, transceiver["call_error"]
    assert [r["reason"] for r in transceiver["redials"]] == ["silence"]
    assert transceiver["redial_on"] == ["trx-2"] and transceiver["survivor_sessions"] == 1


def test_a_crashed_transceivers_claims_leave_etcd_and_the_edge_drops_its_flows(faults) -> None:
    transceiver = fault(faults, "transceiver_kill")
    assert transceiver["claims_gone_s"] is not None, "its claims went with its lease"
    assert transceiver["edge_flows_dropped_s"] is not None
    assert transceiver["counters"]["edge"]["flows_transceiver_gone"] == 1


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="no Chromium")
def test_the_call_page_redials_when_its_transceiver_crashes(faults) -> None:
    page = fault(faults, "transceiver_kill_page")
    assert page["kept"] == 1, page["call_error"]
    assert page["redials"] and page["redials"][0]["reason"] in ("silence", "ice_disconnected", "ice_failed")
    assert page["redial_on"] == ["trx-2"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the backbone is cut in a network namespace: needs root")
def test_a_call_resumes_by_itself_after_a_backbone_blackhole(faults) -> None:
    backbone = fault(faults, "backbone_loss")
    assert backbone["kept"] == 1, backbone["call_error"]
    assert backbone["recovery_s"] is not None, "the echo came back after the link healed"
    assert backbone["redials"] == []


def test_an_offer_burst_fills_both_transceivers_exactly_and_refuses_the_rest_with_retry_after(faults) -> None:
    burst = faults["overload"]
    assert burst["error"] is None, burst["error"]
    assert (burst["calls"], burst["accepted"], burst["refused_503"]) == (200, 100, 100), burst["statuses"]
    assert burst["refused_with_retry_after"] == 100
    assert burst["ice_connected"] == 100 and burst["dtls_connected"] == 100
    assert burst["sessions_at_peak"] == {"trx-1": 50, "trx-2": 50}
    assert burst["crashed"] == [] and burst["sessions_after"] == 0


@pytest.fixture(scope="module")
def soak() -> dict:
    """The soak's last line (``python -m bench.faults.soak --quick``: 60 s of 20 churning calls)."""
    result = subprocess.run([sys.executable, "-m", "bench.faults.soak", "--quick"], cwd=REPO, capture_output=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def test_churning_calls_leave_no_flow_session_claim_task_thread_or_descriptor(soak) -> None:
    assert soak["error"] is None, soak["error"]
    assert soak["calls"] > soak["concurrent"] and soak["connected"] == soak["calls"] == soak["echoed"]
    assert soak["crashed"] == []
    for part, left in soak["left_over"].items():
        assert all(count <= 0 for count in left.values()), (part, left)


def test_churning_calls_grow_no_part_by_more_than_5_percent(soak) -> None:
    """The soak goal on the 60 s run: each part's RSS after the soak within 5 % of its reading after the warm-up.
    A transceiver frees each ended session within COLLECT_AFTER_END_S (core/transceiver.py); left to CPython's
    own full collections, ended sessions pile up for minutes and this run's transceivers grow 7 to 9 %."""
    assert all(growth <= 5.0 for growth in soak["rss_growth_pct"].values()), soak["rss_growth_pct"]
