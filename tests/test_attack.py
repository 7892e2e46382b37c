"""The attacks of issue 9 against real processes on loopback (`python -m bench.attack --quick`), and their goals.

One run of the harness serves every test here: it starts etcd, transceivers, edges and the geo DNS
server as their own processes, attacks each public surface, places legitimate calls during the attacks,
and reports figures measured at sockets it owns (README "Security"). Each test asserts one rule's goal.
"""

from __future__ import annotations

import shutil

import pytest
from procs import harness_figures

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not found: apt-get install etcd-server")]


@pytest.fixture(scope="module")
def figures() -> dict:
    """The harness's last line: per-attack figures and the goals."""
    return harness_figures("bench.attack", timeout_s=600)


def attack(figures: dict, name: str) -> dict:
    """One attack's figures, after checking that it ran."""
    found = figures["attacks"][name]
    assert found["error"] is None, found["error"]
    return found


def test_a_legitimate_call_works_without_an_attack(figures) -> None:
    assert attack(figures, "baseline")["legit_call_ok"]


def test_a_replayed_check_moves_no_media_to_the_observer(figures) -> None:
    hijack = attack(figures, "replay_hijack")
    assert hijack["checks_seen_on_path"] > 0 and hijack["sent"]["packets"] > 1  # the observer replayed a check
    assert figures["hijacked_packets"] == 0
    assert hijack["legit_call_ok"]


def test_signed_checks_from_spoofed_sources_are_not_amplified(figures) -> None:
    reflection = attack(figures, "reflection")
    assert reflection["sent"]["packets"] == reflection["victims"]
    assert reflection["amplification_per_victim_max"] <= 1.0
    assert figures["amplification_max"] <= 1.0


def test_one_token_from_many_sources_cannot_fill_the_flow_table(figures) -> None:
    flood = attack(figures, "token_flood")
    assert flood["sent"]["packets"] >= flood["sources"]
    assert flood["table_full"] == 0
    assert flood["flows_held"] <= 8
    assert flood["legit_call_ok"], flood["legit_call_error"]


def test_a_transceiver_admits_exactly_its_capacity(figures) -> None:
    admission = attack(figures, "admission")
    assert figures["over_admitted"] == 0
    assert admission["accepted"] == admission["capacity"]
    assert admission["statuses"].get("503") == admission["offers"] - admission["capacity"]


def test_a_whip_flood_from_one_source_is_rate_limited(figures) -> None:
    flood = attack(figures, "whip_flood")
    assert flood["rate_limited_429"] > 0
    assert flood["legit_call_ok"], flood["legit_call_error"]


def test_a_patch_flood_reaches_the_transceiver_only_within_the_sessions_bounds(figures) -> None:
    flood = attack(figures, "patch_flood")
    assert flood["rate_limited_429"] > 0
    assert flood["forwarded_own"] <= 6 + 60  # the session's ICE restarts and trickle PATCHes, at most
    assert flood["forwarded_made_up"] == 0
    assert flood["legit_call_ok"], flood["legit_call_error"]


def test_slow_http_connections_are_closed_while_calls_go_on(figures) -> None:
    slow = attack(figures, "slowloris")
    assert slow["connected"] == slow["connections"]
    assert slow["still_open"] == 0
    assert slow["legit_call_ok"], slow["legit_call_error"]


def test_an_offer_with_180_m_lines_gets_400(figures) -> None:
    assert attack(figures, "oversized_sdp")["status"] == 400


def test_the_geo_dns_server_does_not_amplify_towards_a_spoofed_prefix(figures) -> None:
    dns = attack(figures, "dns_amplification")
    assert dns["answer_ratio"] > 1.0  # single answers are larger than their queries: only RRL bounds the flood
    assert dns["amplification"] <= 1.0
    assert dns["legit_answered"]


def test_a_stolen_edge_certificate_registers_nothing_and_overwrites_no_claim(figures) -> None:
    stolen = attack(figures, "compromised_edge")
    assert stolen["etcd_auth"] and stolen["session_claim_found"]
    assert set(stolen["writes"]) == {"register_transceiver", "register_agent", "register_edge",
                                     "overwrite_session_claim"}
    assert all("permission denied" in outcome for outcome in stolen["writes"].values()), stolen["writes"]
    assert figures["compromised_edge_writes_accepted"] == 0
