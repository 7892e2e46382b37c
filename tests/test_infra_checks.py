"""Static checks of every host the deploy renders (make infra-check): the two-region mesh of
tools/rehearsal applied with the mocked AWS provider, each host read back from its user data.

* every ``$VAR``/``${VAR}`` a unit's commands expand is defined by the environment files it loads, as
  rendered (``/etc/voicemesh/etcd.env``) or as voicemesh-prepare writes them (``/run/voicemesh/%i.env``);
* ``systemd-analyze verify`` on each host's units, in a root holding that host's files;
* ``cloud-init schema`` on each host's user data;
* checkov on infra/terraform: each finding fixed or skipped inline with its reason;
* each instance role's rendered policies allow every AWS call the host's scripts make (tools/rehearsal/iam.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_files import ROOT, load_prepare

sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tools" / "rehearsal"))
import iam
import render
import terraform as terraform_cli

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(terraform_cli.provider_mirror() is None,
                       reason="no filesystem mirror of hashicorp/aws (TF_PLUGIN_MIRROR or /opt/tf-plugins)"),
]

CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> dict:
    return render.render(tmp_path_factory.mktemp("render"))


@pytest.fixture(scope="module")
def hosts(state) -> list[render.Host]:
    return render.hosts(state)


def unit_files(host: render.Host) -> dict[str, str]:
    """The host's systemd units and drop-ins by path."""
    return {path: text for path, text in host.files.items() if path.startswith("/etc/systemd/system/")}


def exec_lines(unit: str) -> list[str]:
    """The Exec* settings' values of a unit, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", unit)
    return [line.split("=", 1)[1] for line in joined.splitlines() if re.match(r"Exec[A-Za-z]+=", line)]


def expanded(unit: str) -> set[str]:
    """The environment variables a unit's commands expand ($NAME and ${NAME}; not $$, systemd's escape)."""
    return {m for line in exec_lines(unit) for m in re.findall(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", line)}


def environment(host: render.Host, unit: str, instance: str) -> set[str]:
    """The variables the unit's EnvironmentFile= lines define on ``host`` for ``instance`` (%i)."""
    prepare = load_prepare()
    parts = json.loads(host.files["/etc/voicemesh/host.json"])["parts"]
    names: set[str] = set()
    for line in unit.splitlines():
        if not line.startswith("EnvironmentFile="):
            continue
        path = line.split("=", 1)[1].lstrip("-").replace("%i", instance)
        if path in host.files:
            text = host.files[path]
        elif path == f"{prepare.RUN_DIR}/{instance}.env":
            text = prepare.env_file("repo/voicemesh:0.2.0", parts[instance])
        else:
            raise AssertionError(f"{host.name}: {path} is neither rendered nor written by voicemesh-prepare")
        names |= {entry.split("=", 1)[0] for entry in text.splitlines() if "=" in entry}
    return names


def test_every_variable_a_unit_expands_is_defined_by_its_environment_files(hosts):
    checked = 0
    for host in hosts:
        units = unit_files(host)
        for enabled in host.units:
            template, _, instance = enabled.partition("@")
            path = f"/etc/systemd/system/{template}@.service" if instance else f"/etc/systemd/system/{enabled}"
            if not path.endswith((".service", ".timer")):
                path += ".service"
            if path not in units:
                continue  # a unit the distribution's package brings (nginx): its drop-in is checked below
            unit = units[path]
            missing = expanded(unit) - environment(host, unit, instance)
            assert not missing, f"{host.name} {enabled}: {sorted(missing)} not defined"
            checked += 1
        for path, dropin in units.items():
            if ".service.d/" in path:
                assert not expanded(dropin), f"{host.name} {path} expands variables no file defines"
    assert checked >= len(hosts)


def _stub(path: Path, text: str = "#!/bin/sh\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def test_systemd_analyze_verify_passes_on_every_host(hosts, tmp_path):
    """Each host's units in a root holding the host's files, the distribution's units, and the
    packages cloud-init installs (docker, nginx) as stub executables and units."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    for host in hosts:
        root = tmp_path / host.name
        shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
        for path, text in host.files.items():
            (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / path.lstrip("/")).write_text(text)
            if path.startswith("/usr/local/bin/"):
                (root / path.lstrip("/")).chmod(0o755)
        for exe in ("usr/bin/docker", "usr/bin/dockerd", "usr/bin/rm", "usr/sbin/nginx"):
            _stub(root / exe)
        (root / "etc/systemd/system/docker.service").write_text("[Service]\nExecStart=/usr/bin/dockerd\n")
        if "nginx" in host.units:
            (root / "usr/lib/systemd/system/nginx.service").write_text(
                "[Service]\nType=forking\nPIDFile=/run/nginx.pid\nExecStart=/usr/sbin/nginx\n")
        units = sorted({u if "." in u else f"{u}.service" for u in host.units})
        proc = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units], capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stderr.strip(), f"{host.name}: {proc.stderr}"


def test_cloud_init_schema_accepts_every_hosts_user_data(hosts, tmp_path):
    cloud_init = shutil.which("cloud-init")
    if cloud_init is None:
        pytest.skip("cloud-init is not installed (make apt-test installs it)")
    for host in hosts:
        path = tmp_path / f"{host.name}.yaml"
        path.write_text(host.cloud_config_text)
        proc = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0 and "Valid cloud-config" in proc.stdout, f"{host.name}: {proc.stdout}{proc.stderr}"


def test_checkov_finds_nothing_unjustified_in_the_terraform(tmp_path):
    """checkov on infra/terraform, modules included: every finding is fixed, or skipped inline
    (``# checkov:skip=CKV_...: reason``) where the resource is, with the reason."""
    if not CHECKOV.exists():
        pytest.skip(f"checkov is not installed at {CHECKOV} (make infra-check installs it)")
    proc = subprocess.run([str(CHECKOV), "--directory", str(ROOT / "infra" / "terraform"), "--framework", "terraform",
                           "--download-external-modules", "false", "--skip-path", "tests", "--output", "json",
                           "--quiet", "--compact"], capture_output=True, text=True, timeout=600)
    reports = json.loads(proc.stdout or "[]")
    reports = reports if isinstance(reports, list) else [reports]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]})"
              for report in reports for c in report.get("results", {}).get("failed_checks", [])]
    assert not failed, "\n".join(failed)
    skipped = [c for report in reports for c in report.get("results", {}).get("skipped_checks", [])]
    assert all(c.get("suppress_comment", "").strip() for c in skipped), "every skip gives its reason"


def test_scripts_call_only_aws_commands_the_iam_table_maps():
    assert iam.script_calls() <= set(iam.CLI_ACTIONS)
    assert {("secretsmanager", "get-secret-value"), ("autoscaling", "complete-lifecycle-action")} <= iam.script_calls()


def test_each_instance_role_allows_every_call_its_hosts_make(state, hosts):
    """Each rendered host's calls (tools/rehearsal/iam.py) against the policies Terraform renders for
    the instance profile its instance or launch template names; the table is printed with -s."""
    policies = render.policies(state)
    plans = {json.loads(r["values"]["value"])["core"]: json.loads(r["values"]["value"])
             for r in render.resources(state) if r["type"] == "aws_ssm_parameter" and "/registry/" in r["values"]["name"]}
    rows, problems = [], []
    for host in hosts:
        config = json.loads(host.files["/etc/voicemesh/host.json"])
        role = f"voicemesh-{host.role}"
        plan = plans.get(host.tags.get("voicemesh:core", ""))
        calls = iam.host_calls(config, host.aws_region, plan)
        rows += [(role, call) for call in calls]
        problems += [f"{host.name}: {p}" for p in iam.denied(calls, policies[role], policies.get(f"{role}#managed", []))]
    print(iam.table(rows))
    assert not problems, "\n".join(problems)


def test_the_iam_check_refuses_what_a_policy_does_not_grant():
    """The evaluator itself: a resource outside the pattern, a failed tag condition and a Deny refuse."""
    allow = {"Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                            "Resource": "arn:aws:secretsmanager:*:1:secret:vm/node/*",
                            "Condition": {"StringEquals": {"secretsmanager:ResourceTag/voicemesh:instance":
                                                           "${ec2:SourceInstanceARN}"}}}]}
    mine = {"ec2:SourceInstanceARN": "arn:i-1", "secretsmanager:ResourceTag/voicemesh:instance": "arn:i-1"}
    other = {**mine, "secretsmanager:ResourceTag/voicemesh:instance": "arn:i-2"}
    call = iam.Call(("secretsmanager", "get-secret-value"), "arn:aws:secretsmanager:eu-central-1:1:secret:vm/node/x-AbC123",
                    "t", mine)
    assert iam.allowed("secretsmanager:GetSecretValue", call, [allow], [])
    assert not iam.allowed("secretsmanager:GetSecretValue", iam.Call(call.op, call.resource, "t", other), [allow], [])
    assert not iam.allowed("secretsmanager:PutSecretValue", call, [allow], [])
    assert not iam.allowed("secretsmanager:GetSecretValue",
                           iam.Call(call.op, call.resource.replace("node", "ca"), "t", mine), [allow], [])
    deny = {"Statement": [{"Effect": "Deny", "Action": "secretsmanager:*", "Resource": "*"}]}
    assert not iam.allowed("secretsmanager:GetSecretValue", call, [allow, deny], [])
