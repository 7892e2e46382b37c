"""Every host of a mesh as Terraform renders it: ``terraform test`` applies the whole deploy
(infra/terraform) against the mocked AWS provider (tests/mocks) and prints the state with ``-verbose
-json``; the hosts are read back from it.

``render_runs(workdir)`` -> each run's state values by run name (``terraform show -json`` shape:
``root_module``, ``outputs``); ``render(workdir)`` -> the state of BOOTED_RUN, the mesh the rehearsal
boots. ``hosts(state)`` -> one :class:`Host` per EC2 instance and one per launch template (a
template is the host every launch of its Auto Scaling group gets): its cloud-config as the instance
would receive it (``user_data_base64``, gzip'd), the files that cloud-config writes, and the units it
enables, its Elastic IP, and an edge's second (ICE-TCP) address. ``policies(state)`` -> each IAM role's policy documents, parsed.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEST_DIRECTORY = "rehearsal"
"""infra/terraform/rehearsal/render.tftest.hcl: the runs whose applies are rendered (the two-region
topology fixture). Its own test directory, so the mesh's ``terraform test`` (tests/) does not apply them too."""
BOOTED_RUN = "two_regions"
"""The run the rehearsal boots; the file's other run (``two_regions_with_acme``, ACME renewal on the
edges) is only checked statically (tests/test_infra_checks.py)."""


class RenderError(RuntimeError):
    """Terraform failed, or its state holds no host; the message carries Terraform's output."""


@dataclass
class Host:
    """A host as Terraform renders it. ``name`` is the instance's Name tag (a launch template's
    ``<prefix>-<role>`` for its group's hosts); ``tags`` its tags; ``cloud_config`` the parsed YAML;
    ``files`` path -> content; ``units`` the units ``runcmd`` enables, in its order."""

    address: str
    name: str
    role: str
    aws_region: str
    tags: dict
    private_ip: str
    cloud_config_text: str
    cloud_config: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    units: list = field(default_factory=list)
    group: str = ""
    """The Auto Scaling group whose launch template this is ("" for an instance)."""
    public_ip: str = ""
    """The Elastic IP on the instance's network interface ("" for none)."""
    tcp_private_ip: str = ""
    """An edge's secondary private IP, where its relay takes ICE-TCP ("" for none)."""
    tcp_public_ip: str = ""
    """The second Elastic IP, on tcp_private_ip ("" for none)."""


def _terraform(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "terraform.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RenderError(f"terraform {' '.join(args)}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def render_runs(workdir: Path) -> dict[str, dict]:
    """Copy infra/ and deploy/ into ``workdir``, init, and apply TEST_DIRECTORY's runs with mocked AWS;
    return each run's state values by run name. Raises RenderError."""
    for name in ("infra", "deploy"):
        shutil.rmtree(workdir / name, ignore_errors=True)
        shutil.copytree(ROOT / name, workdir / name, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    cwd = workdir / "infra" / "terraform"
    _terraform(["init", "-backend=false", "-input=false", "-no-color"], cwd)
    out = _terraform(["test", "-no-color", "-json", "-verbose", f"-test-directory={TEST_DIRECTORY}"], cwd).stdout
    states = {}
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("type") == "test_state":
            state = message["test_state"]
            state.pop("provider_schemas", None)
            states[message["@testrun"]] = state
    if BOOTED_RUN not in states:
        raise RenderError(f"terraform test printed no state for {BOOTED_RUN}:\n{out[-3000:]}")
    return states


def render(workdir: Path) -> dict:
    """The state of BOOTED_RUN (render_runs). Raises RenderError."""
    return render_runs(workdir)[BOOTED_RUN]


def resources(state: dict) -> list[dict]:
    """Every resource and data source of the state, depth first."""
    found: list[dict] = []

    def walk(module: dict) -> None:
        found.extend(module.get("resources", []))
        for child in module.get("child_modules", []):
            walk(child)

    walk(state["root_module"])
    return found


def _host(address: str, values: dict, user_data: str, tags: dict, group: str = "", **addresses: str) -> Host:
    text = gzip.decompress(base64.b64decode(user_data)).decode()
    document = yaml.safe_load(text)
    units: list[str] = []
    for command in document.get("runcmd", []):
        if command[:3] == ["systemctl", "enable", "--now"]:
            units.extend(command[3:])
    region = address.split(".")[1].removeprefix("region_").replace("_", "-")
    return Host(address=address, name=tags.get("Name", address), role=tags.get("voicemesh:role", ""),
                aws_region=region, tags=tags, cloud_config_text=text,
                cloud_config=document, files={f["path"]: f["content"] for f in document.get("write_files", [])},
                units=[u for u in units if u != "docker"], group=group,
                **{"private_ip": values.get("private_ip") or "", **addresses})


def hosts(state: dict) -> list[Host]:
    """Every EC2 instance and launch template of the state as a Host; the AWS region comes from the
    region module's address (``module.region_eu_central_1`` -> ``eu-central-1``). Raises RenderError."""
    found = []
    # An edge's interface (its private IP, not the instance's) and its Elastic IPs: edge_pop's "host"
    # on the primary private IP, "tcp" (ICE-TCP) on the secondary.
    interfaces = {r["values"]["id"]: r["values"] for r in resources(state) if r["type"] == "aws_network_interface"}
    eips = {(r["values"]["network_interface"], r["name"]): r["values"] for r in resources(state)
            if r["type"] == "aws_eip" and r["values"].get("network_interface")}
    for r in resources(state):
        values = r["values"]
        if r["type"] == "aws_instance":
            addresses = {}
            for i in [i["network_interface_id"] for i in values.get("network_interface") or []]:
                if (i, "host") in eips:
                    addresses = {"public_ip": eips[i, "host"]["public_ip"], "private_ip": interfaces[i]["private_ip"]}
                if (i, "tcp") in eips:
                    addresses.update(tcp_public_ip=eips[i, "tcp"]["public_ip"],
                                     tcp_private_ip=eips[i, "tcp"]["associate_with_private_ip"])
            host = _host(r["address"], values, values["user_data_base64"], values.get("tags") or {}, **addresses)
        elif r["type"] == "aws_launch_template":
            tags = values["tag_specifications"][0]["tags"]
            # core_region names a group and its template's hosts alike: <name>-<core>-<role>.
            host = _host(r["address"], values, values["user_data"], tags, group=tags["Name"])
        else:
            continue
        found.append(host)
    if not found:
        raise RenderError("the state holds no aws_instance and no aws_launch_template")
    return found


def policies(state: dict) -> dict[str, list[dict]]:
    """Each IAM role's inline policy documents, parsed, by role name; managed policy ARNs under
    ``"<role>#managed"``."""
    found: dict[str, list] = {}
    for r in resources(state):
        if r["type"] == "aws_iam_role_policy":
            found.setdefault(r["values"]["role"], []).append(json.loads(r["values"]["policy"]))
        elif r["type"] == "aws_iam_role_policy_attachment":
            found.setdefault(r["values"]["role"] + "#managed", []).append(r["values"]["policy_arn"])
    return found
