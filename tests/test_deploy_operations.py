"""The deploy's operations scripts and settings: deploy/voicemesh-lifecycle's decisions (scale-in protection
while a transceiver host has calls; the drain of its termination lifecycle hook, completed when its parts
have stopped or after max_session_s), deploy/voicemesh-cert-renew's lego command and where it reads and
writes the certificate, and the remote state backend example."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from deploy_files import ROOT, _load_script

pytestmark = pytest.mark.unit

lifecycle = _load_script("voicemesh-lifecycle")
MAX = 14400


def test_a_host_with_calls_is_protected_from_scale_in_and_released_when_idle():
    state: dict = {}
    assert lifecycle.decide("InService", 3, 2, state, 0.0, MAX) == ["protect"]
    assert lifecycle.decide("InService", 5, 2, state, 15.0, MAX) == []  # already protected: no API call
    assert lifecycle.decide("InService", 0, 2, state, 30.0, MAX) == ["unprotect"]
    assert lifecycle.decide("InService", 0, 2, state, 45.0, MAX) == []


def test_unknown_sessions_change_nothing():
    state = {"protected": True}
    assert lifecycle.decide("InService", None, 2, state, 0.0, MAX) == []
    assert state == {"protected": True}


def test_a_terminating_host_drains_then_completes_when_its_parts_have_stopped():
    state: dict = {"protected": True}
    assert lifecycle.decide("Terminated", 4, 2, state, 100.0, MAX) == ["drain", "heartbeat"]
    assert lifecycle.decide("Terminated", 1, 1, state, 3600.0, MAX) == ["heartbeat"]  # the drain runs once
    assert lifecycle.decide("Terminated", None, 0, state, 3700.0, MAX) == ["complete"]


def test_a_drain_that_outlasts_the_longest_call_is_completed_anyway():
    state: dict = {}
    lifecycle.decide("Terminated", 1, 2, state, 0.0, MAX)
    assert lifecycle.decide("Terminated", 1, 2, state, MAX + lifecycle.GRACE_S, MAX) == ["heartbeat"]
    assert lifecycle.decide("Terminated", 1, 2, state, MAX + lifecycle.GRACE_S + 1, MAX) == ["complete"]


def test_the_drain_dropin_lets_a_part_stop_for_the_longest_call():
    dropin = lifecycle.dropin(MAX)
    assert "ExecStop=\nExecStop=/usr/bin/docker stop --time 14400 voicemesh-%i" in dropin
    assert f"TimeoutStopSec={MAX + lifecycle.GRACE_S}" in dropin


def test_remote_state_is_an_s3_backend_with_a_lock_table_kept_out_of_the_offline_checks():
    example = (ROOT / "infra" / "terraform" / "backend.tf.example").read_text()
    assert 'backend "s3" {}' in example and "dynamodb_table" in example and "use_lockfile" in example
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "infra/terraform/backend.tf" in ignored and "infra/terraform/backend.hcl" in ignored
    assert not (ROOT / "infra" / "terraform" / "backend.tf").exists()  # terraform test runs on local state


renew = _load_script("voicemesh-cert-renew")
ACME = {"domain": "rtc.voicemesh.test", "email": "certs@example.com", "zone_id": "Z0ACME", "aws_region": "eu-west-2",
        "server": "https://acme-v02.api.letsencrypt.org/directory", "lego_image": "goacme/lego:v4.19.2",
        "tls_secret": "voicemesh/whip-tls", "secret_region": "eu-central-1", "renew_days": 30}


def test_renewal_runs_lego_with_route53_in_the_validation_zone():
    command = renew.lego_command(ACME)
    assert command[command.index("--dns") + 1] == "route53" and "AWS_HOSTED_ZONE_ID=Z0ACME" in command
    assert command[command.index("--domains") + 1] == "rtc.voicemesh.test" and command[-1] == "run"


def test_a_secret_without_a_certificate_is_due():
    assert renew.due("", 30)


def test_a_renewal_writes_the_secret_in_its_primary_region_and_installs_it_once_replicated(tmp_path, monkeypatch):
    """The edge reads whip-tls from its own region's replica, which refuses writes: the renewed
    certificate goes to ``secret_region``, and is installed once the replica holds it."""
    (tmp_path / "acme.json").write_text(json.dumps(ACME))
    monkeypatch.setattr(renew, "ACME_FILE", str(tmp_path / "acme.json"))
    monkeypatch.setattr(renew, "LEGO_DIR", str(tmp_path / "lego"))
    monkeypatch.setattr(renew, "TLS_CERT", str(tmp_path / "cert.pem"))
    monkeypatch.setattr(time, "sleep", lambda s: None)
    renewed = {"cert": "NEW CERT", "key": "NEW KEY"}
    replica = [{}, {}, {}, renewed]  # what the edge's region answers: stale twice after the write
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        out = ""
        if command[0] == "docker":
            (tmp_path / "lego" / "certificates").mkdir(parents=True)
            (tmp_path / "lego" / "certificates" / "rtc.voicemesh.test.crt").write_text(renewed["cert"])
            (tmp_path / "lego" / "certificates" / "rtc.voicemesh.test.key").write_text(renewed["key"])
        elif command[3:5] == ["secretsmanager", "get-secret-value"]:
            out = json.dumps(replica.pop(0))
        elif command[0].endswith("voicemesh-prepare"):
            (tmp_path / "cert.pem").write_text(renewed["cert"] if not replica else "OLD CERT")
        return subprocess.CompletedProcess(command, 0, stdout=out)

    monkeypatch.setattr(renew.subprocess, "run", run)
    assert renew.main() == 0
    aws = [c for c in calls if c[0] == "aws"]
    assert {c[2] for c in aws if c[4] == "get-secret-value"} == {"eu-west-2"}
    assert [c[2] for c in aws if c[4] == "put-secret-value"] == ["eu-central-1"]
    assert not replica, "the renewal waited for the replica"
    assert calls[-1] == ["systemctl", "reload", "nginx"] and (tmp_path / "cert.pem").read_text() == "NEW CERT"
