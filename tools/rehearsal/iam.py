"""The AWS calls each host's units make, and whether its instance role's rendered policies allow them.

``CLI_ACTIONS`` maps each ``aws`` command line the deploy's scripts run (deploy/voicemesh-prepare,
deploy/voicemesh-registrar, deploy/voicemesh-etcd) to the IAM actions it needs; ``script_calls()``
finds those command lines in the scripts' source, so a new call fails the check until it is listed.
``host_calls(host, plan)`` lists what one rendered host calls at start (and, for an etcd host, as the
registrar), each with the resource's ARN and the request's condition context; ``allowed()`` evaluates
a call against IAM policy documents (Allow/Deny, ``*``/``?`` wildcards, StringEquals/StringLike with
policy variables), as IAM's policy evaluation logic does for identity policies.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
SCRIPTS = ("voicemesh-prepare", "voicemesh-registrar", "voicemesh-etcd")

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
}
"""``aws SERVICE COMMAND`` -> IAM actions (``s3 cp`` downloads; ``cp-upload`` is ``s3 cp`` to s3://)."""

MANAGED = {
    "AmazonEC2ContainerRegistryReadOnly": {"ecr:GetAuthorizationToken", "ecr:BatchGetImage",
                                           "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"},
}
"""The actions of the AWS managed policies the roles attach, as far as the scripts use them."""


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
        found |= set(re.findall(r'_aws\(\s*"([a-z0-9]+)",\s*"([a-z0-9-]+)"', text))
        found |= set(re.findall(r'\[\s*"aws",\s*"([a-z0-9]+)",\s*"([a-z0-9-]+)"', text))
        found |= {("s3", "cp-upload") for _ in re.findall(r'"aws", "s3", "cp"[^\n]*# upload', text)}
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


def host_calls(host: dict, region: str, plan: dict | None = None, instance_id: str = "i-0abc1234") -> list[Call]:
    """What a host whose /etc/voicemesh/host.json is ``host`` calls in AWS ``region``: every part's
    start (voicemesh-prepare) and, with the region's registrar ``plan`` on an etcd host, the
    registrar's member, init, enroll and retire steps and the etcd snapshot upload."""
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
    registrar = host.get("registrar")
    if registrar and plan is not None:
        ca = secret_arn(region, registrar["ca_secret"])
        trx = plan["transceivers"]
        group = (f"arn:aws:autoscaling:{region}:{ACCOUNT}:autoScalingGroup:0f1e2d3c-uuid:"
                 f"autoScalingGroupName/{trx['asg']}")
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
