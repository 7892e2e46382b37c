"""The deploy's files read without Terraform: the HCL against infra/topology.json, the host's systemd
unit and deploy/voicemesh-prepare, and the image's Dockerfile against the packages pyproject.toml installs."""

from __future__ import annotations

import tomllib

import pytest
from deploy_files import FACTS, PORTS, ROOT, TERRAFORM, TOPOLOGY, load_hcl, load_prepare

pytestmark = pytest.mark.unit


def test_every_topology_region_has_a_provider_and_a_module_call():
    regions = {site["aws_region"] for site in TOPOLOGY["sites"].values()}
    providers = {p["aws"]["alias"]: p["aws"]["region"] for p in load_hcl(TERRAFORM / "providers.tf")["provider"]
                 if "alias" in p["aws"]}
    calls = {name: body for m in load_hcl(TERRAFORM / "regions.tf")["module"] for name, body in m.items()}
    assert set(providers.values()) == regions
    assert {body["aws_region"] for body in calls.values()} == regions
    for body in calls.values():
        alias = body["aws_region"].replace("-", "_")
        assert providers[alias] == body["aws_region"]
        assert body["providers"] == {"aws": f"${{aws.{alias}}}"}
    main = load_hcl(TERRAFORM / "main.tf")["locals"][0]
    assert sorted(main["regions"]) == sorted(f"${{module.{name}}}" for name in calls)
    assert main["edges"] == "${merge(" + ", ".join(f"module.{name}.edges" for name in sorted(calls)) + ")}"


def test_edge_firewall_opens_only_the_topology_ports():
    ingress = load_hcl(TERRAFORM / "modules" / "edge_pop" / "main.tf")["locals"][0]["public_ingress"]
    opened = {(rule["protocol"], rule["port"].removeprefix("${var.ports.").removesuffix("}"))
              for rule in ingress.values()}
    assert opened == {("udp", "relay_udp"), ("tcp", "whip_https"), ("udp", "dns"), ("tcp", "dns")}
    assert {name for _, name in opened} <= set(PORTS)


def test_unit_runs_the_image_with_the_prepared_config():
    unit = (ROOT / "deploy" / "voicemesh@.service").read_text()
    assert "ExecStartPre=/usr/local/bin/voicemesh-prepare %i" in unit
    assert "/run/voicemesh/%i.toml:/run/voicemesh/config.toml:ro" in unit
    assert "${VOICEMESH_IMAGE} $VOICEMESH_ARGS" in unit
    prepare = load_prepare()
    env = prepare.env_file("repo/voicemesh:0.2.0", {"args": ["edge", "--config", "/run/voicemesh/config.toml"]})
    assert env.splitlines() == ["VOICEMESH_IMAGE=repo/voicemesh:0.2.0", "VOICEMESH_DOCKER_OPTS=",
                                "VOICEMESH_ARGS=edge --config /run/voicemesh/config.toml"]


def test_prepare_fills_only_known_placeholders():
    prepare = load_prepare()
    assert prepare.substitute({"a": ["{private_ip}:1"], "b": 2}, FACTS) == {"a": ["10.65.0.10:1"], "b": 2}
    with pytest.raises(prepare.HostConfigError) as err:
        prepare.substitute("{hostname}", FACTS)
    assert err.value.reason == "unknown_placeholder"


def test_prepare_names_the_image_and_its_registry():
    prepare = load_prepare()
    assert prepare.image_ref("ghcr.io/acme/voicemesh", "0.2.0") == "ghcr.io/acme/voicemesh:0.2.0"
    assert prepare.image_ref("ghcr.io/acme/voicemesh", "sha256:00ff") == "ghcr.io/acme/voicemesh@sha256:00ff"
    ecr = "123456789012.dkr.ecr.ap-south-1.amazonaws.com/voicemesh"
    assert prepare.ecr_registry(ecr) == ("123456789012.dkr.ecr.ap-south-1.amazonaws.com", "ap-south-1")
    assert prepare.ecr_registry("ghcr.io/acme/voicemesh") is None


def test_image_holds_every_package_and_runs_voicemesh():
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    for folder in folders:
        assert f"COPY {folder} {folder}" in dockerfile
        assert f"!{folder}/" in ignore
    assert 'ENTRYPOINT ["voicemesh"]' in dockerfile
