"""The rehearsal's stand-ins with real processes: hostinit's systemd stops a unit for good and starts it
again (the restore runbook's ``systemctl stop etcd`` / ``start etcd``), answers ``systemctl`` over its
socket, and the docker shim keeps the local install visible under a container's ``--tmpfs`` (a checkout
under /tmp, as CI clones it)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from deploy_files import ROOT

sys.path.insert(0, str(ROOT / "tools" / "rehearsal"))
import hostinit

pytestmark = pytest.mark.integration


def _systemd(tmp_path, unit: str) -> hostinit.Systemd:
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "u.service").write_text(unit)
    return hostinit.Systemd(dirs=(str(tmp_path / "units"),), log_dir=str(tmp_path / "log"))


def test_a_stopped_unit_stays_stopped_and_starts_again(tmp_path):
    systemd = _systemd(tmp_path, "[Service]\nExecStart=/bin/sleep 600\nRestart=always\nRestartSec=0.1\n")
    assert systemd.systemctl(["start", "u"])
    first = systemd.main["u.service"]
    assert systemd.systemctl(["stop", "u"])
    assert first.poll() is not None  # SIGTERMed, and Restart=always did not bring it back
    assert not systemd.threads["u.service"].is_alive()
    assert systemd.systemctl(["start", "u"])
    assert systemd.main["u.service"] is not first and systemd.main["u.service"].poll() is None
    systemd.systemctl(["stop", "u"])


def test_start_of_a_oneshot_waits_for_it_and_reports_its_failure_over_the_socket(tmp_path, monkeypatch):
    systemd = _systemd(tmp_path, "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'exit 3'\n")
    monkeypatch.setattr(hostinit, "CONTROL", str(tmp_path / "control.sock"))
    threading.Thread(target=systemd.serve, args=(hostinit.CONTROL,), daemon=True).start()
    while not os.path.exists(hostinit.CONTROL):
        threading.Event().wait(0.05)
    assert hostinit.main(["systemctl", "start", "u"]) == 1
    assert hostinit.main(["systemctl", "daemon-reload"]) == 0
    assert hostinit.main(["systemctl", "isolate", "u"]) == 1  # not part of the rehearsal: refused


@pytest.mark.skipif(os.geteuid() != 0, reason="the docker shim makes a mount namespace: root only")
def test_the_docker_shim_keeps_the_install_visible_under_a_tmpfs(tmp_path):
    install = tmp_path / "install"
    (install / "bin").mkdir(parents=True)
    (install / "bin" / "voicemesh").write_text("#!/bin/sh\necho from-the-install \"$@\"\n")
    (install / "bin" / "voicemesh").chmod(0o755)
    shim = tmp_path / "docker"
    shim.write_text((ROOT / "tools" / "rehearsal" / "docker").read_text()
                    .replace("@VOICEMESH_BIN@", str(install / "bin" / "voicemesh"))
                    .replace("@INSTALL_DIRS@", str(install)))
    env = {**os.environ, "REHEARSAL_DOCKER_LOG": str(tmp_path / "docker.jsonl")}
    # The unit's --tmpfs covers the directory the install lies in.
    run = subprocess.run([sys.executable, str(shim), "run", "--rm", "--read-only", "--tmpfs", str(tmp_path),
                          "voicemesh:test", "edge"], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "from-the-install edge"
