"""The rehearsal's docker shim with real processes: it keeps the local install visible under a container's
``--tmpfs`` (a checkout under /tmp, as CI clones it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from deploy_files import ROOT

pytestmark = pytest.mark.integration


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
