"""The deploy rehearsal (make deploy-rehearsal): the two-region mesh as Terraform renders it, booted host by
host on this machine, called through its geo name, then hurt and left to heal.

1. **Render.** ``terraform test`` applies infra/terraform with the mocked AWS provider and the two-region
   topology fixture (infra/terraform/rehearsal/render.tftest.hcl); every EC2 instance's and launch template's user data is
   read back from the state (render.py).
2. **AWS.** moto's server stands in for Secrets Manager, SSM, S3 and Auto Scaling: the state's secrets,
   parameters, buckets and groups are created in it, as ``terraform apply`` would; the operator's steps of
   infra/README.md put the secret values (mesh keys, API key, mesh CA, WHIP certificate) and the GeoIP
   database. An instance metadata service answers each host at 169.254.169.254 (its addresses, instance
   id and role credentials).
3. **Hosts.** Each host is a network namespace on one bridge, with its own filesystem (hostinit.py): the
   user data's files at their paths and its runcmd, whose units run with their own command lines. Edge
   hosts get their Elastic IP as 1:1 NAT. The container images are the one substitution: ``/usr/bin/docker``
   is tools/rehearsal/docker, which runs the voicemesh image's entrypoint from this checkout's venv and the
   etcd image's programs from Debian's etcd. Auto Scaling groups launch their hosts from their launch
   template's user data; each launch is enrolled as EventBridge would, by running the registrar's SSM
   document on the region's etcd hosts.
4. **Scenario.** A call from a client near each edge, through ``rtc.<zone>`` resolved by the rendered
   geo DNS server, WHIP over the rendered nginx TLS front; an etcd member's host replaced with an empty
   disk (it rejoins by ``member add``, ``existing``); a snapshot taken by the snapshot unit; a transceiver
   host terminated (the group launches another, the registrar enrolls it) with calls placed throughout.

Prints a table and, as the last line, one JSON object. Needs root (namespaces, mounts).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import render

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV_BIN = Path(sys.executable).parent
PREFIX = f"rhs-{os.getpid()}"
"""This run's namespaces are named ``PREFIX-...``, its links and bridge (inside its WAN namespace) start with
it: the process id keeps two runs, and anything else on the machine, apart."""
STALE = re.compile(r"rhs-(?:(\d+)-)?.+")
"""A namespace a rehearsal named: its run's process id, or none (named by an older rehearsal)."""
WAN = f"{PREFIX}-wan"
BRIDGE = f"{PREFIX}br"
AWS_IP = "10.255.0.2"
AWS_PORT = 4566
IMDS_IP = "169.254.169.254"
ACCOUNT = "123456789012"
CLIENTS = {"berlin": ("192.0.2.10", "edge-fra"), "new-york": ("203.0.113.10", "edge-iad")}
"""Client namespaces: address (in the GeoIP database the rehearsal uploads) and the PoP it is nearest to."""
SPEECH = ROOT / "voicemesh" / "app" / "assets" / "speech.wav"
CLONE_NEWNET = 0x40000000
DURING_S = 45.0
"""While a member or a host is down: how long calls are retried before the step fails, seconds (the
replacement is booted only after this step, so a call that works came through without it)."""
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH of what runs on a host (systemd's for services; SSM Run Command's is alike)."""


class RehearsalError(RuntimeError):
    """A step of the rehearsal did not reach its state in time; the message says which."""


@dataclass
class Machine:
    """A booted host: the rendered host it runs, its addresses, its namespace and directory."""

    host: render.Host
    name: str
    ip: str
    instance_id: str
    index: int
    public_ip: str = ""
    tcp_ip: str = ""
    """An edge's second private address (its relay's ICE-TCP listener), with its Elastic IP tcp_public_ip."""
    tcp_public_ip: str = ""
    hostdir: Path = Path()
    init: subprocess.Popen | None = None
    events: list = field(default_factory=list)

    @property
    def ns(self) -> str:
        return f"{PREFIX}-h{self.index:02d}"

    @property
    def pid(self) -> int:
        return json.loads((self.hostdir / "booted").read_text())["pid"]


def sh(*argv: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout, **kw)


def wait_for(what: str, predicate, timeout_s: float, every_s: float = 1.0):
    """Poll ``predicate`` until it returns a truthy value; raises RehearsalError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RehearsalError(f"{what}: not reached in {timeout_s:.0f} s")
        time.sleep(every_s)


# --- the network ----------------------------------------------------------------------------------

def enter_wan() -> None:
    """Create the WAN namespace with its bridge and move this process into it (moto, the metadata service
    and every call the rehearsal makes to a host go from there)."""
    teardown()
    sh("ip", "netns", "add", WAN)
    fd = os.open(f"/run/netns/{WAN}", os.O_RDONLY)
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        raise RehearsalError(f"setns {WAN}: {os.strerror(ctypes.get_errno())}")
    os.close(fd)
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "link", "set", BRIDGE, "up")
    for address in (AWS_IP, IMDS_IP):
        sh("ip", "addr", "add", f"{address}/32", "dev", BRIDGE)
    for net in ("10.0.0.0/8", "198.51.100.0/24", "192.0.2.0/24", "203.0.113.0/24"):
        sh("ip", "route", "add", net, "dev", BRIDGE)


def add_namespace(ns: str, link: str, addresses: list[str]) -> None:
    """A namespace on the bridge: a veth named ``link`` (eth0 inside), ``addresses`` (/32, the first is the
    source of its traffic) and a default route on the link."""
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "link", "set", link, "master", BRIDGE)
    sh("ip", "link", "set", link, "up")
    for cmd in (["link", "set", "lo", "up"], ["link", "set", "eth0", "up"]):
        sh("ip", "-n", ns, *cmd)
    for address in addresses:
        sh("ip", "-n", ns, "addr", "add", f"{address}/32", "dev", "eth0")
    sh("ip", "-n", ns, "route", "add", "default", "dev", "eth0")


def elastic_ip(ns: str, private: str, public: str) -> None:
    """An Elastic IP as AWS gives one: traffic to ``public`` reaches ``private``; the host's traffic to
    the internet (outside 10/8 and the link-local metadata service) leaves from ``public``."""
    sh("ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", public, "-j", "DNAT",
       "--to-destination", private)
    sh("ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "POSTROUTING", "-d", IMDS_IP, "-j", "RETURN")
    sh("ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", private, "!", "-d",
       "10.0.0.0/8", "-j", "SNAT", "--to-source", public)


def ours(name: str) -> bool:
    """Whether namespace ``name`` is this run's, or left by a rehearsal that is no longer running."""
    if name.startswith(f"{PREFIX}-"):
        return True
    match = STALE.fullmatch(name)
    return bool(match) and (match.group(1) is None or not Path(f"/proc/{match.group(1)}").exists())


def teardown() -> None:
    """Remove every namespace of this run and those a dead run left (their processes SIGKILLed), and their
    client resolv.conf files; another live run's are left alone."""
    out = sh("ip", "netns", "list", check=False).stdout
    for name in sorted({line.split()[0] for line in out.splitlines() if line.strip()}):
        if ours(name):
            kill_namespace(name)
            sh("ip", "netns", "delete", name, check=False)
    for etc in Path("/etc/netns").iterdir() if Path("/etc/netns").is_dir() else []:
        if ours(etc.name):
            shutil.rmtree(etc, ignore_errors=True)


def kill_namespace(ns: str) -> None:
    for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
        if int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- AWS: moto and the instance metadata service --------------------------------------------------------

class Imds(BaseHTTPRequestHandler):
    """IMDSv2 for every host, told apart by its source address: token, meta-data, role credentials."""

    machines: dict[str, Machine] = {}

    def log_message(self, *args) -> None:
        pass

    def do_PUT(self) -> None:
        self.reply("rehearsal-imds-token" if self.path == "/latest/api/token" else None)

    def do_GET(self) -> None:
        m = self.machines.get(self.client_address[0])
        path = self.path.removeprefix("/latest/meta-data/")
        role = f"voicemesh-{m.host.role}" if m else ""
        credentials = json.dumps({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "AKIAREHEARSAL",
                                  "SecretAccessKey": "rehearsal", "Token": "rehearsal",
                                  "Expiration": "2099-01-01T00:00:00Z", "LastUpdated": "2026-01-01T00:00:00Z"})
        answers = {} if m is None else {
            "local-ipv4": m.ip, "public-ipv4": m.public_ip or None, "instance-id": m.instance_id,
            "placement/region": m.host.aws_region,
            "iam/security-credentials/": role, f"iam/security-credentials/{role}": credentials,
        }
        self.reply(answers.get(path))

    def reply(self, body: str | None) -> None:
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write((body or "").encode())


def start_aws(workdir: Path) -> tuple[subprocess.Popen, ThreadingHTTPServer]:
    moto = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", AWS_IP, "-p", str(AWS_PORT)],
                            stdout=open(workdir / "moto.log", "w"), stderr=subprocess.STDOUT)
    imds = ThreadingHTTPServer((IMDS_IP, 80), Imds)
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    wait_for("moto", lambda: sh("curl", "-sf", f"http://{AWS_IP}:{AWS_PORT}/moto-api/", check=False).returncode == 0, 60)
    return moto, imds


def client(service: str, region: str):
    import boto3

    return boto3.client(service, region_name=region, endpoint_url=f"http://{AWS_IP}:{AWS_PORT}",
                        aws_access_key_id="AKIAREHEARSAL", aws_secret_access_key="rehearsal")


def apply(state: dict, hosts: list[render.Host]) -> dict[str, list[str]]:
    """What ``terraform apply`` would create that the hosts read: secrets (with their replicas and tags),
    SSM parameters, S3 buckets, and each Auto Scaling group with its launch template. Returns each
    group's instance ids."""
    regions = {h.aws_region for h in hosts}
    for r in render.resources(state):
        v, region = r["values"], (r["address"].split(".")[1].removeprefix("region_").replace("_", "-")
                                  if r["address"].startswith("module.region_") else "")
        if r["type"] == "aws_secretsmanager_secret" and r["mode"] == "managed":
            tags = [{"Key": k, "Value": val} for k, val in (v.get("tags") or {}).items()]
            for where in ([region] if region else sorted(regions)):
                client("secretsmanager", where).create_secret(Name=v["name"], Tags=tags)
        elif r["type"] == "aws_ssm_parameter" and r["mode"] == "managed":
            client("ssm", region).put_parameter(Name=v["name"], Value=v["value"], Type="String")
        elif r["type"] == "aws_s3_bucket":
            where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            client("s3", region).create_bucket(Bucket=v["bucket"], **where)
    client("s3", "us-east-1").create_bucket(Bucket="voicemesh-geoip")
    groups = {}
    for host in hosts:
        if not host.group:
            continue
        size = next(r["values"]["min_size"] for r in render.resources(state)
                    if r["type"] == "aws_autoscaling_group" and r["values"]["name"] == host.group)
        client("ec2", host.aws_region).create_launch_template(
            LaunchTemplateName=host.group, LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "c7i.large"})
        asg = client("autoscaling", host.aws_region)
        asg.create_auto_scaling_group(AutoScalingGroupName=host.group, MinSize=size, MaxSize=size + 1,
                                      DesiredCapacity=size, AvailabilityZones=[host.aws_region + "a"],
                                      LaunchTemplate={"LaunchTemplateName": host.group, "Version": "$Latest"})
        groups[host.group] = group_instances(host)
    return groups


def group_instances(host: render.Host) -> list[str]:
    group = client("autoscaling", host.aws_region).describe_auto_scaling_groups(
        AutoScalingGroupNames=[host.group])["AutoScalingGroups"][0]
    return sorted(i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "InService")


def operator_steps(workdir: Path, hosts: list[render.Host]) -> dict:
    """infra/README.md "From zero", steps 2 and 5: the GeoIP database in S3, and the secret values in every
    region holding the secret (a replica's value follows the primary's). Returns the API key and the
    WHIP CA file callers trust."""
    from mmdb_writer import MmdbU32, MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City", languages=["en"],
                        description={"en": "rehearsal clients"})
    for net, (city, country, continent, lat, lon) in {
        "192.0.2.0/24": ("Berlin", "DE", "EU", 52.52, 13.40), "203.0.113.0/24": ("New York", "US", "NA", 40.71, -74.01),
    }.items():
        writer.insert_network(IPSet([net]), {
            "city": {"geoname_id": MmdbU32(1), "names": {"en": city}},
            "country": {"geoname_id": MmdbU32(2), "iso_code": country, "names": {"en": country}},
            "continent": {"geoname_id": MmdbU32(3), "code": continent, "names": {"en": continent}},
            "location": {"latitude": lat, "longitude": lon, "accuracy_radius": 50, "time_zone": "UTC"}})
    writer.to_db_file(str(workdir / "GeoLite2-City.mmdb"))
    client("s3", "us-east-1").upload_file(str(workdir / "GeoLite2-City.mmdb"), "voicemesh-geoip", "GeoLite2-City.mmdb")

    pki = workdir / "operator"
    sh(str(VENV_BIN / "voicemesh"), "registry", "certs", "--out", str(pki / "ca"))
    sh(str(VENV_BIN / "voicemesh"), "registry", "certs", "--out", str(pki / "whip"), "--host", "rtc.voicemesh.test")
    api_key = secrets.token_hex(24)
    values = {
        "voicemesh/token-keys": f"1:{secrets.token_hex(32)}",
        "voicemesh/api-keys": f"backend-1:{api_key}",
        "voicemesh/registry-ca": json.dumps({"cert": (pki / "ca/ca.pem").read_text(),
                                             "key": (pki / "ca/ca-key.pem").read_text()}),
        "voicemesh/whip-tls": json.dumps({"cert": (pki / "whip/etcd.pem").read_text(),
                                          "key": (pki / "whip/etcd-key.pem").read_text()}),
    }
    for region in sorted({h.aws_region for h in hosts}):
        for name, value in values.items():
            client("secretsmanager", region).put_secret_value(SecretId=name, SecretString=value)
    return {"api_key": api_key, "whip_ca": str(pki / "whip" / "ca.pem")}


# --- hosts ----------------------------------------------------------------------------------------------

def preinstall(machine: Machine, agents: dict[str, str]) -> None:
    """What the AMI and cloud-init's ``packages`` bring, under HOSTDIR/preinstalled: docker (the shim, at
    /usr/bin/docker and, hiding this machine's own client, /usr/local/bin/docker), systemctl (asking the
    host's systemd, hostinit.py),
    the aws CLI (this venv's), where AWS is (/root/.aws/config: moto's endpoint), and the VPC's DNS name
    of the region's agent load balancer (/etc/hosts)."""
    pre = machine.hostdir / "preinstalled"
    install = sorted({str(ROOT), str(VENV_BIN.parent)})  # the editable checkout and its venv
    shim = (HERE / "docker").read_text().replace("@VOICEMESH_BIN@", str(VENV_BIN / "voicemesh")).replace(
        "@INSTALL_DIRS@", ":".join(install))
    # Also /usr/local/bin: this machine's own docker client is there, ahead of /usr/bin on the services' PATH.
    for path in ("usr/bin/docker", "usr/local/bin/docker"):
        (pre / path).parent.mkdir(parents=True, exist_ok=True)
        (pre / path).write_text(shim)
        (pre / path).chmod(0o755)
    aws = pre / "usr/bin/aws"
    aws.write_text(f"#!/bin/sh\nexec {VENV_BIN / 'aws'} \"$@\"\n")
    aws.chmod(0o755)
    systemctl = pre / "usr/bin/systemctl"  # asks the host's Systemd (hostinit.py), never this machine's
    systemctl.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'hostinit.py'} systemctl \"$@\"\n")
    systemctl.chmod(0o755)
    (pre / "root/.aws").mkdir(parents=True)
    (pre / "root/.aws/config").write_text(f"[default]\nendpoint_url = http://{AWS_IP}:{AWS_PORT}\n"
                                          "metadata_service_timeout = 10\nmetadata_service_num_attempts = 3\n")
    hosts = Path("/etc/hosts").read_text()
    if machine.host.aws_region in agents:
        hosts += f"{agents[machine.host.aws_region]} agents.elb.amazonaws.com\n"
    (pre / "etc").mkdir(parents=True, exist_ok=True)
    (pre / "etc/hosts").write_text(hosts)


def boot(machine: Machine, workdir: Path, agents: dict[str, str]) -> None:
    """Boot ``machine`` from its user data: a fresh namespace and filesystem (a new instance)."""
    machine.hostdir = workdir / "hosts" / f"{machine.name}-{machine.instance_id}"
    machine.hostdir.mkdir(parents=True)
    (machine.hostdir / "user-data").write_text(machine.host.cloud_config_text)
    preinstall(machine, agents)
    add_namespace(machine.ns, f"{PREFIX}{machine.index:02d}",
                  [a for a in (machine.ip, machine.public_ip, machine.tcp_ip, machine.tcp_public_ip) if a])
    for private, public in ((machine.ip, machine.public_ip), (machine.tcp_ip, machine.tcp_public_ip)):
        if public:
            elastic_ip(machine.ns, private, public)
    Imds.machines[machine.ip] = machine
    machine.init = subprocess.Popen(["ip", "netns", "exec", machine.ns, sys.executable, str(HERE / "hostinit.py"),
                                     "boot", str(machine.hostdir)],
                                    stdout=open(machine.hostdir / "init.log", "w"), stderr=subprocess.STDOUT)
    wait_for(f"{machine.name} boot", lambda: (machine.hostdir / "booted").exists() or machine.init.poll() is not None, 60, 0.2)
    if machine.init.poll() is not None:
        raise RehearsalError(f"{machine.name}: hostinit exited: {(machine.hostdir / 'init.log').read_text()[-2000:]}")


def terminate(machine: Machine) -> None:
    """The instance is gone: every process in its namespace SIGKILLed, the namespace deleted."""
    kill_namespace(machine.ns)
    sh("ip", "netns", "delete", machine.ns, check=False)
    Imds.machines.pop(machine.ip, None)


def on_host(machine: Machine, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``argv`` on the host (its mount and network namespaces), as SSM Run Command would."""
    return sh("nsenter", "-t", str(machine.pid), "-m", "-n", "env", "-i", f"PATH={SERVICE_PATH}", *argv,
              check=False, timeout=timeout)


def unit_log(machine: Machine, unit: str) -> str:
    path = machine.hostdir / "fs/var/log/rehearsal" / f"{unit}.log"
    return path.read_text() if path.exists() else ""


def etcdctl(machine: Machine, *args: str, endpoints: str = "https://127.0.0.1:2379") -> subprocess.CompletedProcess:
    tls = "/run/voicemesh/etcd"
    return on_host(machine, "/usr/bin/etcdctl", "--endpoints", endpoints, "--cacert", f"{tls}/ca.pem",
                   "--cert", f"{tls}/root.pem", "--key", f"{tls}/root-key.pem", "--dial-timeout", "2s",
                   "--command-timeout", "5s", *args, timeout=30)


def members(machine: Machine) -> list[dict]:
    out = etcdctl(machine, "member", "list", "-w", "json")
    return json.loads(out.stdout).get("members", []) if out.returncode == 0 else []


def etcd_users(machine: Machine, instance_id: str) -> list[str]:
    """The etcd users of a transceiver host's workers (their names carry its instance id), listed as root."""
    return [u for u in etcdctl(machine, "user", "list").stdout.split() if instance_id in u]


def registered(machine: Machine) -> list[str]:
    """The registry's node keys, read with root's certificate on an etcd host (no prefix assumed)."""
    out = etcdctl(machine, "get", "", "--prefix", "--keys-only")
    return [k for k in out.stdout.split() if k] if out.returncode == 0 else []


def enroll(machine: Machine, etcd_hosts: list[Machine], document: str, action: str = "enroll") -> bool:
    """EventBridge's target: the registrar's SSM document, its runCommand with ``{{ action }}`` and
    ``{{ instanceId }}`` filled, run on every etcd host of the region. True if one succeeded."""
    command = json.loads(document)["mainSteps"][0]["inputs"]["runCommand"][0]
    command = command.replace("{{ action }}", action).replace("{{ instanceId }}", machine.instance_id)
    with ThreadPoolExecutor(len(etcd_hosts)) as pool:  # Run Command runs on its targets at once
        results = list(pool.map(lambda etcd: on_host(etcd, "sh", "-c", command, timeout=300), etcd_hosts))
    machine.events.append({action: [r.returncode for r in results]})
    return any(r.returncode == 0 for r in results)


def place_call(name: str, api_key: str, ca: str, duration_s: float = 4.0) -> dict:
    """``voicemesh call https://rtc.<zone>/v1/sessions`` from client ``name``'s namespace, whose resolver is
    the geo DNS server of the PoP nearest to it (the zone's delegation would send its resolver there)."""
    ns = f"{PREFIX}-c-{name}"
    env = {**os.environ, "SSL_CERT_FILE": ca, "VOICEMESH_CALL_TOKEN": api_key}
    proc = subprocess.run(["ip", "netns", "exec", ns, str(VENV_BIN / "voicemesh"), "call",
                           "https://rtc.voicemesh.test/v1/sessions", "--wav", str(SPEECH), "--json",
                           "--duration", str(duration_s)], capture_output=True, text=True, env=env, timeout=90)
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        report = {"ok": False, "error": (proc.stderr or proc.stdout).strip()[-300:]}
    resolved = sh("ip", "netns", "exec", ns, "dig", "+short", "rtc.voicemesh.test", check=False).stdout.split()
    return {"client": name, "ok": bool(report.get("ok")), "resolved": resolved,
            "session": report.get("session_url", ""), "audio_rtt_ms": report.get("audio_rtt_ms"),
            "error": report.get("error")}


def call_within(name: str, operator: dict, seconds: float) -> dict:
    """Calls from client ``name`` until one carries the clip both ways or ``seconds`` pass; the last call's
    report with ``attempts``. A call on a shared, loaded machine can lose its echo's correlation without
    any fault of the mesh: the first good call within the window is what counts."""
    deadline, attempts = time.monotonic() + seconds, 0
    while True:
        attempts += 1
        report = place_call(name, operator["api_key"], operator["whip_ca"])
        if report["ok"] or time.monotonic() > deadline:
            return {**report, "attempts": attempts}


def add_client(name: str, address: str, nameserver: str) -> None:
    ns = f"{PREFIX}-c-{name}"
    add_namespace(ns, f"{PREFIX}c{list(CLIENTS).index(name)}", [address])
    etc = Path("/etc/netns") / ns
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text(f"nameserver {nameserver}\noptions timeout:2 attempts:2\n")


# --- the restore runbook -------------------------------------------------------------------------------

RUNBOOK = ROOT / "infra" / "README.md"
RESTORE = "### Restoring etcd from a snapshot"


def runbook_blocks() -> list[str]:
    """The ``sh`` blocks of infra/README.md's restore runbook, in order, as an operator would paste them."""
    text = RUNBOOK.read_text()
    section = text[text.index(RESTORE) + len(RESTORE):]
    section = section[:re.search(r"^#{2,3} ", section, re.M).start()]
    return [textwrap.dedent(block) for block in re.findall(r"```sh\n(.*?)\n *```", section, re.S)]


def run_block(block: str, hosts: list[Machine]) -> list[subprocess.CompletedProcess]:
    """A runbook block on ``hosts`` at once: an ``aws ssm send-command`` block's ``commands`` (Run Command on
    its targets, here ``hosts``), any other block as a script."""
    if "aws ssm send-command" in block:
        block = "\n".join(json.loads(re.search(r"'commands=(\[.*?\])'", block).group(1)))
    with ThreadPoolExecutor(len(hosts)) as pool:
        return list(pool.map(lambda m: on_host(m, "sh", "-c", block, timeout=300), hosts))


def revision(machine: Machine) -> int:
    """The cluster's revision as ``machine``'s member reports it (0 if it does not answer)."""
    out = etcdctl(machine, "endpoint", "status", "-w", "json")
    return json.loads(out.stdout)[0]["Status"]["header"]["revision"] if out.returncode == 0 else 0


def restore_from_snapshot(members_: list[Machine], newest: Machine, lost: Machine, step, call_step,
                          operator: dict) -> None:
    """infra/README.md's restore runbook on a region's three members, its blocks as written: stop, find the
    newest snapshot in S3, restore it on each, start, check, registrar init, retire. Then the region's nodes
    are registered again (``newest``, a transceiver host launched after the snapshot, among them), ``lost``'s
    record (a host terminated after the snapshot) expires with its lease, a node whose index it held claims it
    back once that record's lease expires (registry/etcd.py: no unit logs ``lost index``), ``lost``'s etcd
    users, back with the snapshot, are removed again, and a call goes through."""
    stop, find, restore, start, check, init, retire = runbook_blocks()
    before = revision(members_[0])
    stopped = run_block(stop, members_)
    listing = on_host(members_[0], "sh", "-c", find.replace("<account>", ACCOUNT))
    key = listing.stdout.split()[-1] if listing.returncode == 0 and listing.stdout.split() else ""
    restored = run_block(restore.replace("<account>", ACCOUNT).replace("<key>", key), members_)
    started = run_block(start, members_)
    wait_for("restored cluster answers", lambda: len([x for x in members(members_[0]) if x.get("name")]) == 3, 240, 2)
    status = on_host(members_[0], "sh", "-c", check)
    after = revision(members_[0])
    failed = {name: [r.stderr.strip()[-300:] for r in results if r.returncode]
              for name, results in (("stop", stopped), ("restore", restored), ("start", started))}
    step("etcd restored from its S3 snapshot (runbook steps 1-5)",
         bool(key) and not any(failed.values()) and status.returncode == 0, snapshot=key,
         revision_before=before, revision_after=after, failed={k: v for k, v in failed.items() if v},
         status=status.stdout.strip().splitlines()[-4:] or status.stderr.strip()[-300:])
    gone = not any(newest.instance_id in k for k in registered(members_[0]))
    initialized = run_block(init, members_[:1])[0]
    def settled() -> bool:
        keys = [k for k in registered(members_[0]) if "/v1/nodes/" in k]
        return any(newest.instance_id in k for k in keys) and not any(lost.instance_id in k for k in keys)

    wait_for("nodes registered again after the restore", settled, 240, 3)
    units = [u for u in newest.host.units if u.startswith("voicemesh@transceiver")]
    lost_index = [u for u in units if "lost index" in unit_log(newest, u if u.endswith(".service") else u + ".service")]
    step("registry init after the restore (runbook step 6), nodes registered again, each on its own index",
         initialized.returncode == 0 and not lost_index, launched_since_snapshot=newest.name,
         absent_from_snapshot=gone, lost_index=lost_index,
         nodes=sorted(k.rsplit("/v1/nodes/", 1)[-1] for k in registered(members_[0]) if "/v1/nodes/" in k))
    back = etcd_users(members_[0], lost.instance_id)
    retired = run_block(retire.replace("<instance id>", lost.instance_id), members_[:1])[0]
    step("users of a host terminated since the snapshot removed again (runbook step 7)",
         retired.returncode == 0 and not etcd_users(members_[0], lost.instance_id), restored_users=back,
         stderr=retired.stderr.strip()[-300:])
    call_step("call after the restore", wait_for("call after the restore", lambda: (lambda c: c if c["ok"] else None)(
        place_call("berlin", operator["api_key"], operator["whip_ca"])), 180, 3))


# --- proof that nothing else was rewritten ---------------------------------------------------------------

def files_as_rendered(machine: Machine) -> list[str]:
    """Paths whose content on the host differs from the user data (empty: every file is as rendered)."""
    differ = []
    for path, content in machine.host.files.items():
        on_disk = machine.hostdir / "fs" / path.lstrip("/").split("/", 1)[0] / path.lstrip("/").split("/", 1)[1]
        if not on_disk.exists() or hashlib.sha256(on_disk.read_bytes()).digest() != hashlib.sha256(content.encode()).digest():
            differ.append(path)
    return differ


def docker_calls(machines: list[Machine]) -> dict:
    """Every ``docker`` call the hosts made (the shim's log): how many per subcommand, and each run's
    image and what ran instead (the image's program from the local install; the arguments unchanged but
    for those Debian's etcd 3.4 lacks, listed in ``dropped``)."""
    counts: dict[str, int] = {}
    substitutions: dict[str, str] = {}
    dropped: set[str] = set()
    unchanged = True
    for m in machines:
        log = m.hostdir / "fs/var/log/rehearsal-docker.jsonl"
        for line in log.read_text().splitlines() if log.exists() else []:
            entry = json.loads(line)
            counts[entry["docker"][0]] = counts.get(entry["docker"][0], 0) + 1
            if entry["docker"][0] == "run":
                argv = entry["docker"]
                image_at = next(i for i, a in enumerate(argv) if a.startswith(("voicemesh:", "gcr.io/")))
                image, rest = argv[image_at], argv[image_at + 1:]
                substitutions[image] = entry["ran"][0]
                tail, gone = entry["ran"][1:], entry.get("dropped", [])
                expected = rest[1:] if "etcd" in image else rest
                dropped.update(a for a in gone if a.startswith("--"))
                unchanged &= tail == [a for a in expected if a not in gone]
    return {"calls": counts, "image_to_local": substitutions, "arguments_unchanged": unchanged,
            "dropped": sorted(dropped)}


# --- the scenario ---------------------------------------------------------------------------------------

def rehearse(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="voicemesh-rehearsal-"))
    started = time.monotonic()
    steps: list[dict] = []

    def step(name: str, ok: bool, **detail) -> None:
        steps.append({"step": name, "ok": ok, "t_s": round(time.monotonic() - started, 1), **detail})
        print(f"[{steps[-1]['t_s']:6.1f} s] {'ok  ' if ok else 'FAIL'} {name} {json.dumps(detail)}", flush=True)

    def call_step(name: str, call: dict) -> None:
        step(name, call["ok"], **{k: v for k, v in call.items() if k != "ok"})

    if args.state:
        state = json.loads(Path(args.state).read_text())
    else:
        state = render.render(workdir / "render")
        (workdir / "state.json").write_text(json.dumps(state))
    hosts = render.hosts(state)
    step("render", True, hosts=sorted(h.name for h in hosts))
    documents = {r["address"].split(".")[1]: r["values"]["content"] for r in render.resources(state)
                 if r["type"] == "aws_ssm_document"}

    enter_wan()
    moto, imds = start_aws(workdir)
    machines: list[Machine] = []
    try:
        groups = apply(state, hosts)
        operator = operator_steps(workdir, hosts)
        step("aws", True, groups=groups)

        index = iter(range(1, 99))
        ips: dict[str, int] = {}

        def machine(host: render.Host, instance_id: str) -> Machine:
            n = next(index)
            site = {"eu-central-1": 64, "us-east-1": 66}[host.aws_region]
            if host.role in ("etcd", "edge"):  # fixed addresses: the rendered files name them
                ip = host.private_ip
            else:
                base = {"agent": 50, "transceiver": 100}[host.role]
                ips[host.name] = ips.get(host.name, -1) + 1
                ip = f"10.{site}.16.{base + ips[host.name]}"
            public = host.public_ip if host.role == "edge" else ""
            return Machine(host=host, name=host.name if not host.group else f"{host.group}-{instance_id[-4:]}",
                           ip=ip, instance_id=instance_id, index=n, public_ip=public,
                           tcp_ip=host.tcp_private_ip, tcp_public_ip=host.tcp_public_ip)

        for host in [h for h in hosts if not h.group]:
            machines.append(machine(host, "i-0" + secrets.token_hex(8)))
        for host in [h for h in hosts if h.group]:
            machines += [machine(host, i) for i in groups[host.group]]
        agents = {m.host.aws_region: m.ip for m in machines if m.host.role == "agent"}
        for m in machines:
            boot(m, workdir, agents)
        step("boot", True, hosts={m.name: m.ip + (f" ({m.public_ip})" if m.public_ip else "") for m in machines})

        etcd = {region: [m for m in machines if m.host.role == "etcd" and m.host.aws_region == region]
                for region in ("eu-central-1", "us-east-1")}
        region_module = {"eu-central-1": "region_eu_central_1", "us-east-1": "region_us_east_1"}
        for region, members_ in etcd.items():
            wait_for(f"etcd {region}", lambda ms=members_: len([x for x in members(ms[0]) if x.get("name")]) == 3, 240, 2)
        step("etcd clusters formed", True, members={r: [x["name"] for x in members(ms[0])] for r, ms in etcd.items()})

        def enroll_all(trx: list[Machine]) -> None:
            """Each launch's event is its own: the launches are enrolled at the same time."""
            with ThreadPoolExecutor(len(trx)) as pool:
                list(pool.map(lambda m: wait_for(f"enroll {m.name}", lambda: enroll(
                    m, etcd[m.host.aws_region], documents[region_module[m.host.aws_region]]), 300, 5), trx))

        enroll_all([m for m in machines if m.host.role == "transceiver"])
        step("transceivers enrolled (registrar via the SSM document)", True,
             hosts=[m.name for m in machines if m.host.role == "transceiver"])

        edges = {m.host.tags.get("voicemesh:pop"): m for m in machines if m.host.role == "edge"}
        for name, (address, pop) in CLIENTS.items():
            add_client(name, address, edges[pop].public_ip)

        def all_registered() -> bool:
            keys = registered(etcd["eu-central-1"][0]) + registered(etcd["us-east-1"][0])
            return sum("/v1/nodes/edge/" in k for k in keys) >= 2 and sum("/v1/nodes/transceiver/" in k for k in keys) >= 2

        wait_for("edges and transceivers registered", all_registered, 300, 3)
        step("mesh registered", True)

        calls = {}
        for name in CLIENTS:
            calls[name] = wait_for(f"call from {name}", lambda n=name: (lambda c: c if c["ok"] else None)(
                place_call(n, operator["api_key"], operator["whip_ca"])), 180, 3)
            call_step(f"call from {name} through the geo name", calls[name])

        # An etcd member's host is replaced: same address and user data, an empty disk.
        victim = etcd["eu-central-1"][1]
        before = {x["name"]: x["ID"] for x in members(etcd["eu-central-1"][0])}
        terminate(victim)
        step("etcd member host terminated", True, member=victim.name)
        call_step("call while the member is down", call_within("berlin", operator, DURING_S))
        replacement = Machine(host=victim.host, name=victim.name, ip=victim.ip, instance_id="i-0" + secrets.token_hex(8),
                              index=next(index))
        machines[machines.index(victim)] = replacement
        etcd["eu-central-1"][1] = replacement
        boot(replacement, workdir, agents)

        def rejoined() -> list[dict] | None:
            """The member list once the replacement serves under a new member ID (its old entry gone)."""
            listed = members(etcd["eu-central-1"][0])
            mine = [x for x in listed if x.get("name") == victim.name]
            healthy = etcdctl(replacement, "endpoint", "health").returncode == 0
            return listed if len(listed) == 3 and mine and mine[0]["ID"] != before[victim.name] and healthy else None

        after = {x["name"]: x["ID"] for x in wait_for("member rejoined", rejoined, 300, 2)}
        join_file = on_host(replacement, "cat", "/run/voicemesh/etcd-join.env").stdout
        keys_new = wait_for("replaced member holds the data", lambda: len(etcdctl(
            replacement, "get", "", "--prefix", "--keys-only", "--consistency=s").stdout.split()) or None, 120, 2)
        keys_old = len(registered(etcd["eu-central-1"][0]))
        step("etcd member replaced (member add, existing)", after[victim.name] != before[victim.name]
             and "ETCD_INITIAL_CLUSTER_STATE=existing" in join_file, old_id=format(before[victim.name], "x"),
             new_id=format(after[victim.name], "x"), keys_on_new_member=keys_new, keys_on_peer=keys_old,
             join_env=join_file.strip().splitlines())

        snap = on_host(replacement, "systemctl", "start", "voicemesh-etcd-snapshot.service", timeout=180)
        listed = client("s3", "eu-central-1").list_objects_v2(Bucket="voicemesh-eu-central-etcd-snapshots-" + ACCOUNT)
        uploaded = [o["Key"] for o in listed.get("Contents", [])]
        step("etcd snapshot (the snapshot unit)", snap.returncode == 0 and bool(uploaded), uploaded=uploaded,
             log=unit_log(replacement, "voicemesh-etcd-snapshot.service")[-300:] if snap.returncode else "")

        # A transceiver host is lost: its group launches another, which the registrar enrolls.
        lost = next(m for m in machines if m.host.role == "transceiver" and m.host.aws_region == "eu-central-1")
        terminate(lost)
        asg = client("autoscaling", lost.host.aws_region)
        asg.terminate_instance_in_auto_scaling_group(InstanceId=lost.instance_id, ShouldDecrementDesiredCapacity=False)
        retired = enroll(lost, etcd["eu-central-1"], documents["region_eu_central_1"], action="retire")
        left = {cluster: etcd_users(hosts[0], lost.instance_id) for cluster, hosts in etcd.items()}
        step("transceiver host terminated and retired (its etcd users removed in every cluster)",
             retired and not any(left.values()), host=lost.name, users_left=left)
        call_step("call while the transceiver host is gone", call_within("berlin", operator, DURING_S))
        known = {m.instance_id for m in machines}
        new_id = wait_for("group launched a replacement", lambda: [i for i in group_instances(lost.host)
                                                                    if i not in known], 60)[0]
        fresh = machine(lost.host, new_id)
        machines.append(fresh)
        machines.remove(lost)
        boot(fresh, workdir, agents)
        enroll_all([fresh])
        wait_for("replacement registered", lambda: any(new_id in k and "/v1/nodes/" in k
                                                       for k in registered(etcd["eu-central-1"][0])), 240, 3)
        step("transceiver replaced and registered", True, host=fresh.name)
        recovered = wait_for("call after recovery", lambda: (lambda c: c if c["ok"] else None)(
            place_call("berlin", operator["api_key"], operator["whip_ca"])), 120, 3)
        call_step("call after recovery", recovered)

        restore_from_snapshot(etcd["eu-central-1"], fresh, lost, step, call_step, operator)
    except Exception as exc:  # any failure becomes the report's last step, with the hosts' state kept
        step("error", False, error=f"{type(exc).__name__}: {str(exc)[-2000:]}")
    finally:
        proof = {"files_differing_from_user_data": {m.name: d for m in machines if (d := files_as_rendered(m))},
                 "docker": docker_calls(machines)}
        for m in machines:
            terminate(m)
        teardown()
        moto.terminate()
        imds.shutdown()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return {"ok": all(s["ok"] for s in steps), "duration_s": round(time.monotonic() - started, 1), "steps": steps,
            "substitution": proof, "namespaces": PREFIX, "workdir": str(workdir) if args.keep else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the work directory (host logs, upper layers)")
    parser.add_argument("--state", help="boot this state (state.json of a kept work directory) instead of rendering")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if os.geteuid() != 0:
        print("the rehearsal creates namespaces and mounts: run it as root", file=sys.stderr)
        return 2
    result = rehearse(args)
    print("\n| t (s) | step | ok |\n|---|---|---|")
    for s in result["steps"]:
        print(f"| {s['t_s']} | {s['step']} | {'yes' if s['ok'] else 'NO'} |")
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
