"""The deploy's files read without Terraform: the HCL against infra/topology.json, the host's systemd
unit and deploy/voicemesh-prepare, and the image's Dockerfile against the packages pyproject.toml installs."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib

import pytest
from deploy_files import FACTS, PORTS, ROOT, TERRAFORM, TOPOLOGY, issue, load_etcd, load_hcl, load_prepare, load_registrar

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
    assert f"/run/voicemesh/%i.pki:{load_prepare().PKI_DIR}:ro" in unit
    prepare = load_prepare()
    env = prepare.env_file("repo/voicemesh:0.2.0", {"args": ["edge", "--config", "/run/voicemesh/config.toml"]})
    assert env.splitlines() == ["VOICEMESH_IMAGE=repo/voicemesh:0.2.0", "VOICEMESH_DOCKER_OPTS=",
                                "VOICEMESH_ARGS=edge --config /run/voicemesh/config.toml",
                                "OTEL_EXPORTER_OTLP_ENDPOINT="]
    traced = prepare.env_file("repo/voicemesh:0.2.0", {"args": ["dns"]}, "http://127.0.0.1:4317")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317" in traced.splitlines()
    assert "--env OTEL_EXPORTER_OTLP_ENDPOINT " in unit  # the env file's value reaches the container


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


def _exec_start(unit: str) -> list[str]:
    """The ExecStart command line of a systemd unit, continuation lines joined, split on whitespace."""
    joined = re.sub(r"\\\n\s*", " ", unit)
    return next(line for line in joined.splitlines() if line.startswith("ExecStart=")).split()


def test_etcd_requires_client_certificates_from_the_mesh_ca_for_clients_and_peers(tmp_path):
    """etcd.service runs etcd with --client-cert-auth (the CN is the user, registry/access.py) and TLS for
    clients and peers, on the files the registrar's member step writes before each start."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from voicemesh.registry.access import ROOT as ROOT_USER

    unit = (ROOT / "deploy" / "etcd.service").read_text()
    registrar = load_registrar()
    assert "ExecStartPre=/usr/local/bin/voicemesh-registrar member" in unit
    command = _exec_start(unit)
    assert {"--client-cert-auth", "--peer-client-cert-auth"} <= set(command)
    assert f"{registrar.ETCD_PKI}:/etc/etcd/tls:ro" in command
    files = {flag: command[command.index(flag) + 1] for flag in (
        "--trusted-ca-file", "--cert-file", "--key-file", "--peer-trusted-ca-file", "--peer-cert-file", "--peer-key-file")}
    bundle = issue(tmp_path, ["root"], registrar.member_hosts("10.64.16.10", "etcd.eu-central.voicemesh.internal"),
                   server="etcd")
    written = registrar.member_files(bundle)
    assert {path.removeprefix("/etc/etcd/tls/") for path in files.values()} <= set(written)
    server = x509.load_pem_x509_certificate(written["etcd.pem"].encode())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"10.64.16.10", "127.0.0.1"}
    assert set(names.get_values_for_type(x509.DNSName)) == {"etcd.eu-central.voicemesh.internal", "localhost"}
    root = x509.load_pem_x509_certificate(written["root.pem"].encode())
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ROOT_USER


def test_registry_init_runs_after_etcd_and_retries_until_it_answers():
    unit = (ROOT / "deploy" / "voicemesh-registry-init.service").read_text()
    assert "ExecStart=/usr/local/bin/voicemesh-registrar init" in unit
    assert {"After=etcd.service", "Type=oneshot", "Restart=on-failure"} <= set(unit.splitlines())


def test_registrar_runs_the_voicemesh_cli_with_arguments_it_accepts():
    from voicemesh.app.cli import parser
    from voicemesh.registry.access import Identity

    registrar = load_registrar()
    certs = parser().parse_args(registrar.certs_args(["edge/edge-fra/edge-fra-1", "dns"], ["10.64.16.10"]))
    assert (certs.registry_command, certs.out, certs.node, certs.host) == (
        "certs", "/pki", ["edge/edge-fra/edge-fra-1", "dns"], ["10.64.16.10"])
    add = parser().parse_args(registrar.add_node_args("transceiver/eu-central/trx-eu-central-i-0abc1234-1", "us-east"))
    assert (add.registry_command, add.cluster_region) == ("add-node", "us-east")
    assert Identity(add.role, add.region, add.node_id).user == "transceiver/eu-central/trx-eu-central-i-0abc1234-1"
    remove = parser().parse_args(registrar.remove_node_args("transceiver/eu-central/trx-eu-central-i-0abc1234-1"))
    assert remove.registry_command == "remove-node"
    assert Identity(remove.role, remove.region, remove.node_id).user == "transceiver/eu-central/trx-eu-central-i-0abc1234-1"
    assert registrar.cert_file("edge/edge-fra/edge-fra-1") == "edge_edge-fra_edge-fra-1.pem"


def test_registrar_enrolls_only_ec2_instance_ids():
    registrar = load_registrar()
    group = {"users": ["transceiver/eu-central/trx-eu-central-{instance_id}-0"]}
    assert registrar.transceiver_users(group, "i-0123456789abcdef0") == [
        "transceiver/eu-central/trx-eu-central-i-0123456789abcdef0-0"]
    for bad in ("i-0abc/../x", "edge-fra-1", "i-0ABC12345", ""):
        with pytest.raises(ValueError):
            registrar.transceiver_users(group, bad)


def _mesh_plan(core: str) -> dict:
    """The plan of ``core``'s registrar for a two-region mesh, shaped as infra/terraform renders it
    (modules/core_region registry_plan; its mesh part is the same in every region's)."""
    def group(name: str, aws_region: str) -> dict:
        return {"core": name, "aws_region": aws_region, "registry": f"etcd://{name}.test:2379",
                "server_name": "etcd.voicemesh.internal", "asg": f"voicemesh-{name}-transceiver",
                "users": [f"transceiver/{name}/trx-{name}-{{instance_id}}-{w}" for w in range(2)]}
    cores = [group("eu-central", "eu-central-1"), group("us-east", "us-east-1")]
    own = next(g for g in cores if g["core"] == core)
    return {"core": core, "nodes": [], "servers": [],
            "transceivers": {"asg": own["asg"], "hook": "enroll", "users": own["users"], "secret_prefix": "voicemesh/node/",
                             "instance_arn_prefix": f"arn:aws:ec2:{own['aws_region']}:1:instance/"},
            "mesh": {"users": ["edge/edge-lon/edge-lon-1@eu-central", "edge/edge-nyc/edge-nyc-1@us-east", "dns"],
                     "cores": cores}}


IN_SERVICE = {"voicemesh-eu-central-transceiver": "i-0aaaaaaaaaaaaaaa1", "voicemesh-us-east-transceiver": "i-0bbbbbbbbbbbbbbb2"}
"""The transceiver host in service of each group of _mesh_plan."""


class _Recorder:
    """The registrar's outside, recorded: each ``voicemesh registry`` command with the cluster it went to,
    AWS calls answered from IN_SERVICE, certificates issued as empty bundles."""

    def __init__(self, registrar, plan: dict, monkeypatch, down: str = "") -> None:
        """``down``: a core region whose cluster, or an AWS region whose API, does not answer."""
        self.calls: list[tuple[str, list]] = []
        host = {"aws_region": next(g["aws_region"] for g in plan["mesh"]["cores"] if g["core"] == plan["core"]),
                "registrar": {"ca_secret": "voicemesh/registry-ca", "plan_parameter": "/p", "etcd_client_port": 2379}}
        self.registrar = registrar.Registrar(host)
        self.registrar.plan = lambda: plan
        self.registrar.issue = lambda users, hosts, server="": {}
        self.registrar.put = lambda *args, **kwargs: None

        def registry(args: list, cluster: dict | None = None) -> None:
            core = cluster["core"] if cluster else plan["core"]
            if core == down:
                raise subprocess.CalledProcessError(1, ["docker", "run"], stderr="unavailable")
            self.calls.append((core, args))

        def aws(service: str, command: str, *args: str) -> str:
            if down and "--region" in args and args[args.index("--region") + 1] == down:
                raise subprocess.CalledProcessError(1, ["aws"], stderr="unavailable")
            if command == "describe-auto-scaling-groups":
                return IN_SERVICE[args[args.index("--auto-scaling-group-names") + 1]]
            if command == "describe-auto-scaling-instances":
                return plan["transceivers"]["asg"]
            if command == "get-secret-value":
                raise subprocess.CalledProcessError(1, ["aws"])
            return ""

        self.registrar.registry = registry
        monkeypatch.setattr(registrar.prepare, "_aws", aws)
        monkeypatch.setattr(registrar.prepare, "_secret", lambda host, name: json.dumps({"cert": "C", "key": "K"}))

    def grants(self) -> dict:
        """What the recorded commands make, by cluster: {core: {user: its own grants there}}."""
        from voicemesh.app.cli import parser
        from voicemesh.registry.access import Identity

        made: dict = {}
        for core, args in self.calls:
            parsed = parser().parse_args(args)
            assert parsed.cluster_region == core, "every command names the cluster it runs against"
            identities = ([Identity.parse(spec) for spec in parsed.node] if parsed.registry_command == "init"
                          else [Identity(parsed.role, parsed.region, parsed.node_id, parsed.home)])
            made.setdefault(core, {}).update({i.user: i.grants(core) for i in identities})
        return made


@pytest.mark.parametrize("core", ["eu-central", "us-east"])
def test_each_registrar_makes_every_node_of_the_mesh_writing_only_at_home(core, monkeypatch):
    from voicemesh.registry.access import Permission

    registrar = load_registrar()
    recorder = _Recorder(registrar, _mesh_plan(core), monkeypatch)
    recorder.registrar.init()
    made = recorder.grants()
    assert set(made) == {core}
    users = made[core]
    assert set(users) == {"edge/edge-lon/edge-lon-1", "edge/edge-nyc/edge-nyc-1", "dns",
                          *(f"transceiver/{name}/trx-{name}-{instance_id}-{w}"
                            for name, instance_id in (("eu-central", "i-0aaaaaaaaaaaaaaa1"), ("us-east", "i-0bbbbbbbbbbbbbbb2"))
                            for w in range(2))}
    homes = {"edge/edge-lon/edge-lon-1": "eu-central", "edge/edge-nyc/edge-nyc-1": "us-east"}
    for user, grants in users.items():
        if user == "dns":
            continue
        home = homes.get(user, user.split("/")[1])
        writes = {g.permission for g in grants} - {Permission.READ}
        assert bool(writes) == (home == core), f"{user} (home {home}) in {core}'s cluster: {grants}"


def test_enrolling_a_transceiver_makes_its_users_in_every_cluster_read_only_away_from_home(monkeypatch):
    from voicemesh.registry.access import Permission

    registrar = load_registrar()
    recorder = _Recorder(registrar, _mesh_plan("eu-central"), monkeypatch)
    recorder.registrar.enroll("i-0ccccccccccccccc3")
    made = recorder.grants()
    users = {f"transceiver/eu-central/trx-eu-central-i-0ccccccccccccccc3-{w}" for w in range(2)}
    assert set(made) == {"eu-central", "us-east"}
    assert set(made["eu-central"]) == set(made["us-east"]) == users
    assert all(Permission.READWRITE in {g.permission for g in grants} for grants in made["eu-central"].values())
    assert all({g.permission for g in grants} == {Permission.READ} for grants in made["us-east"].values())


def test_a_foreign_cluster_that_does_not_answer_does_not_hold_a_launch(monkeypatch, capsys):
    registrar = load_registrar()
    recorder = _Recorder(registrar, _mesh_plan("eu-central"), monkeypatch, down="us-east")
    completed: list = []
    aws = registrar.prepare._aws
    monkeypatch.setattr(registrar.prepare, "_aws", lambda *a: completed.append(a[1]) or aws(*a))
    recorder.registrar.enroll("i-0ccccccccccccccc3")
    assert "complete-lifecycle-action" in completed
    assert "not yet in us-east's cluster" in capsys.readouterr().err


def test_registrar_issues_again_only_what_is_missing_old_or_from_a_rotated_ca():
    registrar = load_registrar()
    now, ca = 1_800_000_000, registrar.trusted({"cert": "OLD\n", "key": "K"})
    assert not registrar.stale(json.dumps({"issued_at": now - 86400, "ca": ca}), now, ca)
    assert registrar.stale(json.dumps({"issued_at": now - registrar.REISSUE_S - 1, "ca": ca}), now, ca)
    assert registrar.stale("", now, ca) and registrar.stale("{}", now, ca) and registrar.stale("not json", now, ca)
    rotating = registrar.trusted({"cert": "OLD\n", "key": "K", "trust": "NEW\n"})
    assert rotating == "OLD\nNEW\n"
    assert registrar.stale(json.dumps({"issued_at": now, "ca": ca}), now, rotating)


def test_prepare_hands_a_part_only_its_own_certificate():
    prepare = load_prepare()
    bundle = {"ca": "CA", "issued_at": 1, "certs": {"edge/edge-fra/edge-fra-1": {"cert": "C", "key": "K"},
                                                    "dns": {"cert": "D", "key": "DK"}}}
    pki = {"secret": "voicemesh/node/edge-fra-1", "name": "dns",
           "settings": {"registry_ca": "ca", "registry_cert": "cert", "registry_key": "key"}}
    assert prepare.pki_files(pki, bundle) == {"ca": "CA", "cert": "D", "key": "DK"}
    assert prepare.pki_settings(pki) == {"registry_ca": "/run/voicemesh/pki/ca.pem",
                                         "registry_cert": "/run/voicemesh/pki/cert.pem",
                                         "registry_key": "/run/voicemesh/pki/key.pem"}
    with pytest.raises(prepare.HostConfigError) as err:
        prepare.pki_files({**pki, "name": "edge/edge-fra/edge-fra-2"}, bundle)
    assert err.value.reason == "missing_certificate"
    with pytest.raises(prepare.HostConfigError) as err:
        prepare.pki_settings({**pki, "settings": {"registry_key": "ca-key"}})
    assert err.value.reason == "unknown_pki_file"


def test_a_region_whose_api_does_not_answer_does_not_hold_the_rest_of_init(monkeypatch, capsys):
    registrar = load_registrar()
    recorder = _Recorder(registrar, _mesh_plan("eu-central"), monkeypatch, down="us-east-1")
    recorder.registrar.init()
    users = recorder.grants()["eu-central"]
    assert "transceiver/eu-central/trx-eu-central-i-0aaaaaaaaaaaaaaa1-0" in users and "edge/edge-nyc/edge-nyc-1" in users
    assert not any(user.startswith("transceiver/us-east/") for user in users)
    assert "us-east's transceivers not listed" in capsys.readouterr().err


ETCD_ENV = {
    "ETCD_NAME": "etcd-eu-central-1", "ETCD_DATA_DIR": "/var/lib/etcd",
    "ETCD_INITIAL_ADVERTISE_PEER_URLS": "https://10.64.32.10:2380",
    "ETCD_ADVERTISE_CLIENT_URLS": "https://10.64.32.10:2379",
    "ETCD_INITIAL_CLUSTER": "etcd-eu-central-0=https://10.64.16.10:2380,etcd-eu-central-1=https://10.64.32.10:2380,"
                            "etcd-eu-central-2=https://10.64.48.10:2380",
}


def test_etcd_member_with_a_new_disk_replaces_itself_in_the_running_cluster():
    """voicemesh-etcd join: a member that had started and lost its disk is removed and added again; one
    removed by hand is added; data on disk, no answer (first boot) or a never-started entry change nothing."""
    etcd = load_etcd()
    started = [{"ID": 1, "name": "etcd-eu-central-0", "peerURLs": ["https://10.64.16.10:2380"]},
               {"ID": 2, "name": "etcd-eu-central-1", "peerURLs": ["https://10.64.32.10:2380"]}]
    assert etcd.other_endpoints(ETCD_ENV) == ["https://10.64.16.10:2379", "https://10.64.48.10:2379"]
    assert etcd.join_plan(ETCD_ENV, started, has_data=False) == (2, True)
    assert etcd.join_plan(ETCD_ENV, started[:1], has_data=False) == (None, True)
    assert etcd.join_plan(ETCD_ENV, started, has_data=True) == (None, False)
    assert etcd.join_plan(ETCD_ENV, None, has_data=False) == (None, False)
    unstarted = [started[0], {"ID": 2, "name": "", "peerURLs": ["https://10.64.32.10:2380"]}]
    assert etcd.join_plan(ETCD_ENV, unstarted, has_data=False) == (None, False)


def test_etcd_join_file_takes_the_cluster_member_add_printed():
    etcd = load_etcd()
    printed = ('Member 2 added to cluster 9\n\nETCD_NAME="etcd-eu-central-1"\n'
               'ETCD_INITIAL_CLUSTER="etcd-eu-central-0=https://10.64.16.10:2380,etcd-eu-central-1=https://10.64.32.10:2380"\n'
               'ETCD_INITIAL_ADVERTISE_PEER_URLS="https://10.64.32.10:2380"\nETCD_INITIAL_CLUSTER_STATE="existing"\n')
    assert etcd.read_env(etcd.join_env(printed)) == {
        "ETCD_INITIAL_CLUSTER": "etcd-eu-central-0=https://10.64.16.10:2380,etcd-eu-central-1=https://10.64.32.10:2380",
        "ETCD_INITIAL_CLUSTER_STATE": "existing"}
    with pytest.raises(ValueError):
        etcd.join_env("Member 2 added\n")
    assert etcd.snapshot_key("s3://b/eu-central/", "etcd-eu-central-1", 0) == "s3://b/eu-central/etcd-eu-central-1/19700101T000000Z.db"


def test_etcd_unit_rejoins_before_it_starts_and_reads_the_join_file_last():
    unit = (ROOT / "deploy" / "etcd.service").read_text()
    pre = [line for line in unit.splitlines() if line.startswith("ExecStartPre=")]
    assert pre[:2] == ["ExecStartPre=/usr/local/bin/voicemesh-registrar member",
                       "ExecStartPre=/usr/local/bin/voicemesh-etcd join"]
    command = _exec_start(unit)
    files = [command[i + 1] for i, arg in enumerate(command) if arg == "--env-file"]
    assert files == ["/etc/voicemesh/etcd.env", load_etcd().JOIN_FILE]
