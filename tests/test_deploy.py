"""The deploy's files read without Terraform: the HCL against infra/topology.json, the host's systemd
unit and deploy/voicemesh-prepare, and the image's Dockerfile against the packages pyproject.toml installs."""

from __future__ import annotations

import json
import re
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
    add = parser().parse_args(registrar.add_node_args("transceiver/eu-central/trx-eu-central-i-0abc1234-1"))
    assert add.registry_command == "add-node"
    assert Identity(add.role, add.region, add.node_id).user == "transceiver/eu-central/trx-eu-central-i-0abc1234-1"
    assert registrar.cert_file("edge/edge-fra/edge-fra-1") == "edge_edge-fra_edge-fra-1.pem"


def test_registrar_enrolls_only_ec2_instance_ids():
    registrar = load_registrar()
    plan = {"transceivers": {"users": ["transceiver/eu-central/trx-eu-central-{instance_id}-0"]}}
    assert registrar.transceiver_users(plan, "i-0123456789abcdef0") == [
        "transceiver/eu-central/trx-eu-central-i-0123456789abcdef0-0"]
    for bad in ("i-0abc/../x", "edge-fra-1", "i-0ABC12345", ""):
        with pytest.raises(ValueError):
            registrar.transceiver_users(plan, bad)


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
