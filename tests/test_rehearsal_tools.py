"""The rehearsal's stand-ins for systemd and docker (tools/rehearsal/hostinit.py, tools/rehearsal/docker):
unit files read and command lines expanded as systemd does, and docker's arguments honoured but the image."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys

import pytest
from deploy_files import ROOT

sys.path.insert(0, str(ROOT / "tools" / "rehearsal"))
import hostinit

pytestmark = pytest.mark.unit


def _docker():
    loader = importlib.machinery.SourceFileLoader("rehearsal_docker", str(ROOT / "tools" / "rehearsal" / "docker"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def test_command_lines_expand_as_systemd_does():
    env = {"VOICEMESH_IMAGE": "repo/voicemesh:1", "VOICEMESH_ARGS": "edge --config /run/x.toml", "EMPTY": ""}
    argv, ignore = hostinit.command_line("/usr/bin/docker run $EMPTY ${VOICEMESH_IMAGE} $VOICEMESH_ARGS", env)
    assert argv == ["/usr/bin/docker", "run", "repo/voicemesh:1", "edge", "--config", "/run/x.toml"] and not ignore
    argv, ignore = hostinit.command_line("-/usr/sbin/nginx -g 'daemon on; master_process on;'", env)
    assert argv == ["/usr/sbin/nginx", "-g", "daemon on; master_process on;"] and ignore
    assert hostinit.command_line("/bin/echo a${VOICEMESH_IMAGE}b", env)[0] == ["/bin/echo", "arepo/voicemesh:1b"]


def test_a_drop_in_resets_a_list_setting_and_the_instance_fills_percent_i(tmp_path):
    (tmp_path / "voicemesh@.service").write_text("[Service]\nExecStartPre=/bin/a %i\nExecStart=/bin/run \\\n  %i\n")
    (tmp_path / "voicemesh@edge.service.d").mkdir()
    (tmp_path / "voicemesh@edge.service.d" / "x.conf").write_text("[Service]\nExecStartPre=\nExecStartPre=/bin/b\n")
    unit = hostinit.Unit("voicemesh@edge", dirs=(str(tmp_path),))
    assert unit.settings["ExecStartPre"] == ["/bin/b"]
    assert unit.get("ExecStart").split() == ["/bin/run", "edge"]
    assert hostinit.Unit("voicemesh@dns", dirs=(str(tmp_path),)).settings["ExecStartPre"] == ["/bin/a dns"]
    with pytest.raises(hostinit.UnitError):
        hostinit.Unit("absent", dirs=(str(tmp_path),))


def test_environment_files_are_read_for_each_command_and_may_be_optional(tmp_path):
    (tmp_path / "u.service").write_text(f"[Service]\nEnvironmentFile=-{tmp_path}/late.env\nExecStart=/bin/true\n")
    unit = hostinit.Unit("u", dirs=(str(tmp_path),))
    assert "A" not in unit.environment()
    (tmp_path / "late.env").write_text("A=1\n# comment\nB=x y\n")
    assert unit.environment()["A"] == "1" and unit.environment()["B"] == "x y"


def test_the_docker_shim_replaces_only_the_image():
    docker = _docker()
    options, image, command = docker.parse(["--rm", "--name", "etcd", "--network", "host", "--volume", "/a:/b:ro",
                                            "--env-file", "/e", "gcr.io/etcd-development/etcd:v3.5.21",
                                            "/usr/local/bin/etcd", "--client-cert-auth"])
    assert ("--volume", "/a:/b:ro") in options and ("--rm", "") in options
    assert docker.program(image, command) == (["/usr/bin/etcd", "--client-cert-auth"], [])
    assert docker.program("repo/voicemesh:0.2.0", ["edge", "--config", "/c"]) == (
        [docker.VOICEMESH_BIN, "edge", "--config", "/c"], [])
    restore = ["/usr/local/bin/etcdutl", "snapshot", "restore", "/s.db", "--bump-revision", "1000000000",
               "--data-dir", "/d", "--mark-compacted"]
    assert docker.program(image, restore) == (["/usr/bin/etcdctl", "snapshot", "restore", "/s.db", "--data-dir", "/d"],
                                              ["--bump-revision", "1000000000", "--mark-compacted"])
    with pytest.raises(SystemExit):
        docker.program("gcr.io/etcd-development/etcd:v3.5.21", ["/bin/sh"])
