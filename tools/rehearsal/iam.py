"""The AWS calls each host's units make, and whether its instance role's rendered policies allow them.

``CLI_ACTIONS`` maps each ``aws`` command line the deploy's scripts run (SCRIPTS, in deploy/) to the
IAM actions it needs, and the Route 53 calls lego makes for voicemesh-cert-renew; ``script_calls()``
finds those command lines in the scripts' source, so a new call fails the check until it is listed.
``host_calls(host, plan, lifecycle=, acme=)`` lists what one rendered host calls: at start (and, for
an etcd host, as the registrar), and from its operations timers (a transceiver host's
voicemesh-lifecycle, an edge host's voicemesh-cert-renew), each with the resource's ARN and the
request's condition context; ``allowed()`` evaluates a call against IAM policy documents
(Allow/Deny, ``*``/``?`` wildcards, StringEquals/StringLike with policy variables), as IAM's policy
evaluation logic does for identity policies. ``replica_writes()`` finds writes to a secret's
replica, which Secrets Manager refuses whatever IAM allows.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
SCRIPTS = ("voicemesh-prepare", "voicemesh-registrar", "voicemesh-etcd", "voicemesh-lifecycle", "voicemesh-cert-renew")

CLI_ACTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("ssm", "get-parameter"): ("ssm:GetParameter",),
    ("secretsmanager", "get-secret-value"): ("secretsmanager:GetSecretValue",),
    ("secretsmanager", "create-secret"): ("secretsmanager:CreateSecret", "secretsmanager:TagResource"),
    ("secretsmanager", "put-secret-value"): ("secretsmanager:PutSecretValue",),
    ("secretsmanager", "delete-secret"): ("secretsmanager:DeleteSecret",),
    ("s3", "cp"): ("s3:GetObject",),
    ("s3", "cp-upload"): ("s3:PutObject",),
    ("ecr", "get-login-password"): ("ecr:GetAuthorizationToken",),
    ("autoscaling", "describe-auto-scaling-groups"): ("autoscaling:DescribeAutoScalingGroups",),
    ("autoscaling", "describe-auto-scaling-instances"): ("autoscaling:DescribeAutoScalingInstances",),
    ("autoscaling", "complete-lifecycle-action"): ("autoscaling:CompleteLifecycleAction",),
    ("autoscaling", "set-instance-protection"): ("autoscaling:SetInstanceProtection",),
    ("autoscaling", "record-lifecycle-action-heartbeat"): ("autoscaling:RecordLifecycleActionHeartbeat",),
    ("route53", "list-resource-record-sets"): ("route53:ListResourceRecordSets",),
    ("route53", "change-resource-record-sets"): ("route53:ChangeResourceRecordSets",),
    ("route53", "get-change"): ("route53:GetChange",),
    ("logs", "create-log-group"): ("logs:CreateLogGroup",),
    ("logs", "create-log-stream"): ("logs:CreateLogStream",),
    ("logs", "put-log-events"): ("logs:PutLogEvents",),
    ("xray", "put-trace-segments"): ("xray:PutTraceSegments",),
}
"""``aws SERVICE COMMAND`` -> IAM actions (``s3 cp`` downloads; ``cp-upload`` is ``s3 cp`` to s3://). The
``route53`` rows are lego's route53 provider (``--dns route53``), not the aws CLI: given the zone's id
(AWS_HOSTED_ZONE_ID), it lists the challenge name's TXT records, upserts and later deletes them, and
polls the change until it is INSYNC; it looks no zone up by name. The ``logs`` and ``xray`` rows are
the OpenTelemetry collector's exporters (COLLECTOR_EXPORTERS)."""

LEGO_ROUTE53 = {("route53", "list-resource-record-sets"), ("route53", "change-resource-record-sets"),
                ("route53", "get-change")}

COLLECTOR_EXPORTERS: dict[str, tuple[tuple[str, str], ...]] = {
    "awsemf": (("logs", "create-log-group"), ("logs", "create-log-stream"), ("logs", "put-log-events")),
    "awsxray": (("xray", "put-trace-segments"),),
}
"""The collector's exporters (deploy/otel-collector.yaml) -> the calls each makes: EMF metrics are log
events in ``log_group_name`` (the group and stream made when missing); traces are segments."""

MANAGED = {
    "AmazonEC2ContainerRegistryReadOnly": {"ecr:GetAuthorizationToken", "ecr:BatchGetImage",
                                           "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"},
    "CloudWatchAgentServerPolicy": {"cloudwatch:PutMetricData", "ec2:DescribeVolumes", "ec2:DescribeTags",
                                    "logs:PutLogEvents", "logs:PutRetentionPolicy", "logs:DescribeLogStreams",
                                    "logs:DescribeLogGroups", "logs:CreateLogStream", "logs:CreateLogGroup",
                                    "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules",
                                    "xray:GetSamplingTargets", "xray:GetSamplingStatisticSummaries"},
    "AWSXrayWriteOnlyAccess": {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules",
                               "xray:GetSamplingTargets", "xray:GetSamplingStatisticSummaries"},
}
"""The actions of the AWS managed policies the roles attach (their ``Resource: *`` statements), as far as
the hosts use them."""


@dataclass
class Call:
    """One AWS call: ``op`` is a CLI_ACTIONS key; ``resource`` an ARN; ``context`` condition keys."""

    op: tuple[str, str]
    resource: str
    why: str
    context: dict = field(default_factory=dict)


def script_calls() -> set[tuple[str, str]]:
    """The ``aws SERVICE COMMAND`` pairs the deploy's scripts run, read from their source."""
    found = set()
    for name in SCRIPTS:
        path = ROOT / "deploy" / name
        if not path.exists():
            continue
        text = path.read_text()
        # _aws("svc", "cmd", ...) or _aws(region, "svc", "cmd", ...)
        found |= set(re.findall(r'_aws\(\s*(?:[A-Za-z_]\w*(?:\[[^\]]*\])?,\s*)?"([a-z0-9]+)",\s*"([a-z0-9-]+)"', text))
        found |= set(re.findall(r'\[\s*"aws",\s*"([a-z0-9]+)",\s*"([a-z0-9-]+)"', text))
        found |= {("s3", "cp-upload") for _ in re.findall(r'"aws", "s3", "cp"[^\n]*# upload', text)}
        # name = ["aws", "--region", ..., "svc"] then [*name, "cmd", ...]
        for name, service in re.findall(r'(\w+) = \[\s*"aws",[^\n]*"([a-z0-9]+)"\]$', text, re.M):
            found |= {(service, command) for command in re.findall(rf'\[\*{name},\s*"([a-z0-9-]+)"', text)}
        if re.search(r'"--dns",\s*"route53"', text):
            found |= LEGO_ROUTE53
    return found


def secret_arn(region: str, name: str) -> str:
    """A secret's ARN: Secrets Manager appends '-' and six random characters to the name."""
    return f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{name}-AbC123"


def parameter_arn(region: str, name: str) -> str:
    return f"arn:aws:ssm:{region}:{ACCOUNT}:parameter{name}"


def instance_arn(region: str, instance_id: str) -> str:
    return f"arn:aws:ec2:{region}:{ACCOUNT}:instance/{instance_id}"


def s3_arn(uri: str) -> str:
    return "arn:aws:s3:::" + uri.removeprefix("s3://")


def group_arn(region: str, asg: str) -> str:
    return f"arn:aws:autoscaling:{region}:{ACCOUNT}:autoScalingGroup:0f1e2d3c-uuid:autoScalingGroupName/{asg}"


def host_calls(host: dict, region: str, plan: dict | None = None, instance_id: str = "i-0abc1234",
               lifecycle: dict | None = None, acme: dict | None = None, collector: dict | None = None) -> list[Call]:
    """What a host whose /etc/voicemesh/host.json is ``host`` calls in AWS ``region``: every part's
    start (voicemesh-prepare); with the region's registrar ``plan`` on an etcd host, the registrar's
    member, init, enroll and retire steps and the etcd snapshot upload; with its
    /etc/voicemesh/lifecycle.json ``lifecycle``, voicemesh-lifecycle's scale-in protection and drain
    hook; with its /etc/voicemesh/acme.json ``acme``, voicemesh-cert-renew's reads and writes of the
    WHIP certificate and lego's Route 53 calls; with its /etc/voicemesh/otel-collector.yaml
    ``collector`` (parsed), the exporters' calls of each pipeline, in ``region``."""
    me = instance_arn(region, instance_id)
    own = {"ec2:SourceInstanceARN": me, "secretsmanager:ResourceTag/voicemesh:instance": me}
    release = Call(("ssm", "get-parameter"), parameter_arn(region, host["release_parameter"]), "release")
    calls = [Call(("ecr", "get-login-password"), "*", "image pull")]
    for name, part in host["parts"].items():
        if "tls_secret" in part:
            calls.append(Call(("secretsmanager", "get-secret-value"), secret_arn(region, part["tls_secret"]), name))
            continue
        calls.append(release)
        for secret in part.get("secrets", {}).values():
            calls.append(Call(("secretsmanager", "get-secret-value"), secret_arn(region, secret), name))
        for parameter in part.get("parameters", {}).values():
            calls.append(Call(("ssm", "get-parameter"), parameter_arn(region, parameter), name))
        if "pki" in part:
            secret = part["pki"]["secret"].replace("{instance_id}", instance_id)
            node = secret.startswith(host.get("node_secret_prefix", "voicemesh/node/"))
            calls.append(Call(("secretsmanager", "get-secret-value"), secret_arn(region, secret), f"{name} pki",
                              own if node else {}))
        for source in part.get("files", {}).values():
            calls.append(Call(("s3", "cp"), s3_arn(source), f"{name} file"))
    if lifecycle is not None:
        group = group_arn(lifecycle["aws_region"], lifecycle["asg"])
        calls += [Call(("autoscaling", "set-instance-protection"), group, "lifecycle: calls in progress"),
                  Call(("autoscaling", "record-lifecycle-action-heartbeat"), group, "lifecycle: draining"),
                  Call(("autoscaling", "complete-lifecycle-action"), group, "lifecycle: drained")]
    if acme is not None:
        zone = f"arn:aws:route53:::hostedzone/{acme['zone_id']}"
        calls += [
            Call(("secretsmanager", "get-secret-value"), secret_arn(acme["aws_region"], acme["tls_secret"]), "cert-renew"),
            Call(("secretsmanager", "put-secret-value"), secret_arn(acme["secret_region"], acme["tls_secret"]),
                 "cert-renew: renewed"),
            Call(("route53", "list-resource-record-sets"), zone, "cert-renew: lego"),
            Call(("route53", "change-resource-record-sets"), zone, "cert-renew: lego"),
            Call(("route53", "get-change"), "arn:aws:route53:::change/C0123456789ABC", "cert-renew: lego"),
        ]
    if collector is not None:
        used = {name for pipeline in collector["service"]["pipelines"].values() for name in pipeline["exporters"]}
        for name in sorted(used):
            group = (collector["exporters"][name] or {}).get("log_group_name")
            for op in COLLECTOR_EXPORTERS[name.split("/")[0]]:
                if group is None:
                    resource = "*"
                elif op == ("logs", "create-log-group"):
                    resource = f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{group}"
                else:
                    resource = f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{group}:log-stream:{instance_id}"
                calls.append(Call(op, resource, f"otel-collector {name}"))
    registrar = host.get("registrar")
    if registrar and plan is not None:
        ca = secret_arn(region, registrar["ca_secret"])
        trx = plan["transceivers"]
        group = group_arn(region, trx["asg"])
        new_host = trx["secret_prefix"] + "i-0fed9876"
        calls += [
            release,
            Call(("secretsmanager", "get-secret-value"), ca, "registrar: the CA"),
            Call(("ssm", "get-parameter"), parameter_arn(region, registrar["plan_parameter"]), "registrar: plan"),
            Call(("autoscaling", "describe-auto-scaling-groups"), "*", "registrar init"),
            Call(("autoscaling", "describe-auto-scaling-instances"), "*", "registrar enroll"),
            Call(("secretsmanager", "create-secret"), secret_arn(region, new_host), "registrar enroll"),
            Call(("secretsmanager", "put-secret-value"), secret_arn(region, new_host), "registrar enroll"),
            Call(("autoscaling", "complete-lifecycle-action"), group, "registrar enroll"),
            Call(("secretsmanager", "delete-secret"), secret_arn(region, new_host), "registrar retire"),
        ]
        for node in plan["nodes"] + plan["servers"]:
            for op in ("get-secret-value", "put-secret-value"):
                calls.append(Call(("secretsmanager", op), secret_arn(node["aws_region"], node["secret"]),
                                  "registrar init"))
        if registrar.get("snapshot_uri"):
            calls.append(Call(("s3", "cp-upload"), s3_arn(registrar["snapshot_uri"]) + "/etcd-x/1.db",
                              "etcd snapshot"))
    return calls


def _matches(pattern: str | list, value: str, case: bool) -> bool:
    """IAM's wildcard match: ``*`` any run of characters, ``?`` one; actions ignore case, ARNs do not."""
    patterns = pattern if isinstance(pattern, list) else [pattern]
    if not case:
        return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in patterns)
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _condition(condition: dict, context: dict) -> bool:
    for test, keys in condition.items():
        for key, wanted in keys.items():
            values = wanted if isinstance(wanted, list) else [wanted]
            values = [re.sub(r"\$\{([^}]+)\}", lambda m: context.get(m.group(1), "\0"), v) for v in values]
            have = context.get(key)
            if have is None:
                return False
            if test == "StringEquals" and have not in values:
                return False
            if test == "StringLike" and not any(fnmatch.fnmatchcase(have, v) for v in values):
                return False
            if test not in ("StringEquals", "StringLike"):
                raise ValueError(f"condition operator {test} is not evaluated here")
    return True


def allowed(action: str, call: Call, documents: list[dict], managed: list[str]) -> bool:
    """Whether ``documents`` (identity policies) and the ``managed`` policy ARNs allow ``action`` on
    ``call.resource``: an explicit Deny wins, else any matching Allow."""
    if any(action in MANAGED.get(arn.rsplit("/", 1)[-1], set()) for arn in managed):
        return True
    verdict = False
    for document in documents:
        for statement in document["Statement"]:
            if not _matches(statement["Action"], action, False) or not _matches(statement["Resource"], call.resource, True):
                continue
            if "Condition" in statement and not _condition(statement["Condition"], call.context):
                continue
            if statement["Effect"] == "Deny":
                return False
            verdict = True
    return verdict


def denied(calls: list[Call], documents: list[dict], managed: list[str]) -> list[str]:
    """Each call ``documents`` do not allow, as ``"<action> on <resource> (<why>)"``."""
    return [f"{action} on {call.resource} ({call.why})" for call in calls for action in CLI_ACTIONS[call.op]
            if not allowed(action, call, documents, managed)]


WRITES = {("secretsmanager", "put-secret-value"), ("secretsmanager", "create-secret"),
          ("secretsmanager", "delete-secret")}


def replica_writes(calls: list[Call], replicas: dict[str, set[str]]) -> list[str]:
    """Each write in ``calls`` to a secret in a region where ``replicas`` (secret name -> its replica
    regions) says it is a replica: Secrets Manager takes writes only in the primary region."""
    found = []
    for call in calls:
        if call.op not in WRITES:
            continue
        region, name = call.resource.split(":")[3], call.resource.split(":secret:", 1)[1].rsplit("-", 1)[0]
        if region in replicas.get(name, set()):
            found.append(f"{' '.join(call.op)} on {call.resource} ({call.why}): a replica of {name}")
    return found


def table(rows: list[tuple[str, Call]]) -> str:
    """A markdown table of (role, call) rows: role, CLI command, IAM actions, resource, why."""
    lines = ["| role | aws command | IAM actions | resource | why |", "|---|---|---|---|---|"]
    seen = set()
    for role, call in rows:
        key = (role, call.op, call.resource)
        if key not in seen:
            seen.add(key)
            lines.append(f"| {role} | {' '.join(call.op)} | {', '.join(CLI_ACTIONS[call.op])} | {call.resource} "
                         f"| {call.why} |")
    return "\n".join(lines)
