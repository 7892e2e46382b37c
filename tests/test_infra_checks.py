"""Static checks of every host the deploy renders (make infra-check): the two-region mesh of
tools/rehearsal applied with the mocked AWS provider, each host read back from its user data, and the
same mesh with ACME renewal and the collector sidecar (infra/terraform/rehearsal/render.tftest.hcl's
two runs).

* every ``$VAR``/``${VAR}`` a unit's commands expand is defined by the environment files it loads, as
  rendered (``/etc/voicemesh/etcd.env``) or as voicemesh-prepare writes them (``/run/voicemesh/%i.env``);
* ``systemd-analyze verify`` on each host's units, in a root holding that host's files;
* ``cloud-init schema`` on each host's user data;
* checkov on infra/terraform: each finding fixed or skipped inline with its reason;
* each instance role's rendered policies allow every AWS call the host's scripts make, start-up and
  operations timers (tools/rehearsal/iam.py), and removing any action they need fails the check;
* the zone's name servers (the name-servers parameter, the delegation's glue) are the edge hosts' own
  Elastic IPs, one per host.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
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
def states(tmp_path_factory) -> dict[str, dict]:
    """Each run's state by name: the mesh the rehearsal boots (render.BOOTED_RUN), and with ACME."""
    return render.render_runs(tmp_path_factory.mktemp("render"))


@pytest.fixture(scope="module")
def state(states) -> dict:
    return states[render.BOOTED_RUN]


@pytest.fixture(scope="module")
def hosts(states) -> list[render.Host]:
    """Every host of the booted mesh, and the hosts of the other run (ACME and the collector) but its etcd
    members, whose files neither changes (named ``<host>+<run>``)."""
    found = render.hosts(states[render.BOOTED_RUN])
    for run, state in states.items():
        if run != render.BOOTED_RUN:
            found += [dataclasses.replace(h, name=f"{h.name}+{run}") for h in render.hosts(state) if h.role != "etcd"]
    return found


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


CHECKOV_TIMEOUT_S = 900
"""A bound on a hung checkov, not a timing assertion (a run takes 2-3 minutes on a 2-vCPU VM)."""

CHECKOV_ENV = {"CHECKOV_ENABLE_MODULES_FOREACH_HANDLING": "False"}
"""checkov's rendering of each module for_each instance took 7-15 minutes of CPU here and changed nothing:
with it and without it checkov 3.3.30 gave the same 1,419 passed and 164 skipped checks on this Terraform,
resource by resource (each module is then checked once, its resources' own for_each still rendered), in
7.7 minutes against 2.0. A check that would pass for one module instance and fail for another would be
seen with it only: turn it back on (remove this) if a module's instances come to differ in what checkov
checks."""

NO_REASON = {"", "No comment provided"}
"""checkov's suppress_comment for a ``# checkov:skip=CKV_...`` without a reason."""


def test_checkov_finds_nothing_unjustified_in_the_terraform(tmp_path):
    """checkov on infra/terraform, modules included: every finding is fixed, or skipped inline
    (``# checkov:skip=CKV_...: reason``) where the resource is, with the reason."""
    if not CHECKOV.exists():
        pytest.skip(f"checkov is not installed at {CHECKOV} (make infra-check installs it)")
    proc = subprocess.run([str(CHECKOV), "--directory", str(ROOT / "infra" / "terraform"), "--framework", "terraform",
                           "--download-external-modules", "false", "--skip-path", "tests", "--output", "json",
                           "--compact"], capture_output=True, text=True, timeout=CHECKOV_TIMEOUT_S,
                          env={**os.environ, **CHECKOV_ENV})
    reports = json.loads(proc.stdout or "[]")
    reports = reports if isinstance(reports, list) else [reports]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]})"
              for report in reports for c in report.get("results", {}).get("failed_checks", [])]
    assert not failed, "\n".join(failed)
    skipped = [c for report in reports for c in report.get("results", {}).get("skipped_checks", [])]
    assert skipped, "the skips are listed (the Terraform has some): not --quiet"
    unjustified = sorted({f"{c['check_id']} {c['file_path']}:{c['file_line_range'][0]}" for c in skipped
                          if c["check_result"].get("suppress_comment", "").strip() in NO_REASON})
    assert not unjustified, "every skip gives its reason:\n" + "\n".join(unjustified)


def test_scripts_call_only_aws_commands_the_iam_table_maps():
    assert iam.script_calls() <= set(iam.CLI_ACTIONS)
    assert {("secretsmanager", "get-secret-value"), ("autoscaling", "complete-lifecycle-action"),
            ("autoscaling", "set-instance-protection"), ("route53", "change-resource-record-sets")} <= iam.script_calls()


def test_the_collectors_exporters_are_in_the_iam_table():
    """A new exporter in deploy/otel-collector.yaml fails here until its calls are listed."""
    config = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    assert {name.split("/")[0] for name in config["exporters"]} <= set(iam.COLLECTOR_EXPORTERS)
    assert {op for ops in iam.COLLECTOR_EXPORTERS.values() for op in ops} <= set(iam.CLI_ACTIONS)


def role_calls(state: dict) -> dict[str, list[tuple[str, iam.Call]]]:
    """Each instance role's (host name, call) pairs: what every host of ``state`` whose instance or
    launch template names that role's profile calls, at start and from its operations timers."""
    plans = {json.loads(r["values"]["value"])["core"]: json.loads(r["values"]["value"])
             for r in render.resources(state) if r["type"] == "aws_ssm_parameter" and "/registry/" in r["values"]["name"]}
    found: dict[str, list] = {}
    for host in render.hosts(state):
        config = json.loads(host.files["/etc/voicemesh/host.json"])
        extra = {key: json.loads(host.files[f"/etc/voicemesh/{key}.json"]) for key in ("lifecycle", "acme")
                 if f"/etc/voicemesh/{key}.json" in host.files}
        if "/etc/voicemesh/otel-collector.yaml" in host.files:
            extra["collector"] = yaml.safe_load(host.files["/etc/voicemesh/otel-collector.yaml"])
        calls = iam.host_calls(config, host.aws_region, plans.get(host.tags.get("voicemesh:core", "")), **extra)
        found.setdefault(f"voicemesh-{host.role}", []).extend((host.name, call) for call in calls)
    return found


def test_each_instance_role_allows_every_call_its_hosts_make(states):
    """Each rendered host's calls (tools/rehearsal/iam.py) against the policies Terraform renders for
    the instance profile its instance or launch template names, in both runs; the table is printed with -s."""
    rows, problems, ops = [], [], set()
    for run, state in states.items():
        policies = render.policies(state)
        for role, calls in role_calls(state).items():
            rows += [(role, call) for _, call in calls]
            ops |= {call.op for _, call in calls}
            problems += [f"{run} {host}: {p}" for host, call in calls
                         for p in iam.denied([call], policies[role], policies.get(f"{role}#managed", []))]
    print(iam.table(rows))
    assert not problems, "\n".join(problems)
    assert {("autoscaling", "set-instance-protection"), ("autoscaling", "record-lifecycle-action-heartbeat"),
            ("secretsmanager", "put-secret-value"), ("logs", "put-log-events"), ("xray", "put-trace-segments")
            } | iam.LEGO_ROUTE53 <= ops, "the operations timers' and the collector's calls are checked"


def without(documents: list[dict], action: str) -> list[dict]:
    """``documents`` with ``action`` taken out of every statement (a statement left with none dropped)."""
    out = []
    for document in documents:
        statements = []
        for statement in document["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if [a for a in actions if a != action]:
                statements.append({**statement, "Action": [a for a in actions if a != action]})
        out.append({**document, "Statement": statements})
    return out


def test_the_iam_check_fails_when_any_action_a_role_needs_is_removed(states):
    """Every action a host's call needs, taken out of its role (out of every rendered inline statement,
    and every attached AWS managed policy that grants it detached), makes the check refuse that call:
    the check covers each of them, the operations, ACME and collector policies' too."""
    removed = set()
    for state in states.values():
        policies = render.policies(state)
        for role, calls in role_calls(state).items():
            managed = policies.get(f"{role}#managed", [])
            needed = {action for _, call in calls for action in iam.CLI_ACTIONS[call.op]}
            for action in needed - {a for r, a in removed if r == role}:
                kept = [arn for arn in managed if action not in iam.MANAGED.get(arn.rsplit("/", 1)[-1], set())]
                refused = iam.denied([call for _, call in calls], without(policies[role], action), kept)
                assert any(line.startswith(f"{action} on ") for line in refused), f"{role} without {action}"
                removed.add((role, action))
    assert {("voicemesh-transceiver", "autoscaling:SetInstanceProtection"),
            ("voicemesh-transceiver", "autoscaling:RecordLifecycleActionHeartbeat"),
            ("voicemesh-edge", "route53:ChangeResourceRecordSets"), ("voicemesh-edge", "route53:GetChange"),
            ("voicemesh-edge", "secretsmanager:PutSecretValue"), ("voicemesh-agent", "logs:PutLogEvents"),
            ("voicemesh-edge", "xray:PutTraceSegments")} <= removed


def test_no_host_writes_to_a_secrets_replica(states):
    """Secrets Manager refuses writes to a replica, whatever IAM allows: every write of a script goes
    to the secret's primary region (voicemesh-cert-renew's renewed certificate in whip-tls, too)."""
    for state in states.values():
        replicas = {r["values"]["name"]: {replica["region"] for replica in r["values"].get("replica") or []}
                    for r in render.resources(state) if r["type"] == "aws_secretsmanager_secret"}
        assert replicas["voicemesh/whip-tls"], "the rendered whip-tls secret has replicas"
        calls = [call for pairs in role_calls(state).values() for _, call in pairs]
        problems = iam.replica_writes(calls, replicas)
        assert not problems, "\n".join(problems)


def test_name_servers_and_glue_are_each_edge_hosts_own_elastic_ip(state):
    """The geo DNS servers' name-servers parameter (every region's) and the delegation's glue give each
    PoP's name server the Elastic IPs of that PoP's hosts: one address per host, none shared."""
    edges = [h for h in render.hosts(state) if h.role == "edge"]
    addresses = [h.public_ip for h in edges]
    assert all(ipaddress.ip_address(a) for a in addresses) and len(set(addresses)) == len(edges) >= 2, addresses
    expected: dict[str, set[str]] = {}
    for h in edges:
        zone = json.loads(h.files["/etc/voicemesh/host.json"])["parts"]["dns"]["settings"]["dns"]["zone"]
        expected.setdefault(f"ns-{h.tags['voicemesh:pop']}.{zone}", set()).add(h.public_ip)
    parameters = [r["values"]["value"] for r in render.resources(state)
                  if r["type"] == "aws_ssm_parameter" and r["values"]["name"].endswith("/name-servers")]
    assert len(parameters) == len({h.aws_region for h in edges})
    for value in parameters:
        rendered: dict[str, set[str]] = {}
        for entry in value.split(","):
            name, address = entry.split("=")
            rendered.setdefault(name, set()).add(address)
        assert rendered == expected
    glue: dict[str, set[str]] = {}
    for line in state["outputs"]["delegation_records"]["value"]:
        name, _, _, kind, value = line.split()
        if kind == "A":
            glue.setdefault(name.rstrip("."), set()).add(value)
    assert glue == expected
    checks = {r["values"]["tags"]["Name"]: (r["values"]["type"], r["values"]["ip_address"], r["values"]["port"])
              for r in render.resources(state) if r["type"] == "aws_route53_health_check"}
    assert checks == {**{h.name: ("HTTPS", h.public_ip, 443) for h in edges},
                      **{f"{h.name}-ice-tcp": ("TCP", h.tcp_public_ip, 443) for h in edges}}, \
        "each host's health checks probe its own addresses: WHIP on the first, ICE-TCP on the second"


def test_each_edge_serves_ice_tcp_on_its_second_address_and_whip_on_its_first(hosts):
    """ICE-TCP on 443 beside nginx's WHIP front on 443 (README "ICE-TCP on 443"): the relay binds the host's
    secondary private IP and advertises its second Elastic IP, nginx listens on the first private IP only,
    and the edge's container may bind 443. The four addresses are the host's own."""
    edges = [h for h in hosts if h.role == "edge"]
    assert edges
    for h in edges:
        addresses = [h.private_ip, h.public_ip, h.tcp_private_ip, h.tcp_public_ip]
        assert all(ipaddress.ip_address(a) for a in addresses) and len(set(addresses)) == 4, addresses
        part = json.loads(h.files["/etc/voicemesh/host.json"])["parts"]["edge"]
        assert (part["settings"]["edge"]["relay_tcp"], part["settings"]["edge"]["advertise_tcp"]) == (
            f"{h.tcp_private_ip}:443", f"{h.tcp_public_ip}:443"), h.name
        assert part["docker_options"] == ["--user", "0", "--cap-add", "NET_BIND_SERVICE"] and part["uid"] == 0
        nginx = h.files["/etc/nginx/conf.d/voicemesh-whip.conf"]
        assert re.findall(r"^\s*listen\s+(.*);", nginx, re.M) == [f"{h.private_ip}:443 ssl"], h.name
    own = {h.name.split("+")[0]: h.tcp_public_ip for h in edges}  # the ACME run renders the same hosts again
    assert len(set(own.values())) == len(own) >= 2, "each edge host's ICE-TCP address is its own"


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
