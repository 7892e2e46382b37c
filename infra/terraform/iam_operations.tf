# What the operations sidecars on a host call, beside its start-up reads (iam.tf): the
# OpenTelemetry collector writes metrics (CloudWatch Logs, embedded metric format) and traces
# (X-Ray); a transceiver host's voicemesh-lifecycle protects itself from scale-in while it has
# calls and records and completes its own termination lifecycle action.

resource "aws_iam_role_policy_attachment" "otel_metrics" {
  for_each   = var.otel_collector_image == "" ? toset([]) : toset(["edge", "transceiver", "agent"])
  role       = aws_iam_role.host[each.key].name
  policy_arn = "${local.arn}:iam::aws:policy/CloudWatchAgentServerPolicy"
}

resource "aws_iam_role_policy_attachment" "otel_traces" {
  for_each   = var.otel_collector_image == "" ? toset([]) : toset(["edge", "transceiver", "agent"])
  role       = aws_iam_role.host[each.key].name
  policy_arn = "${local.arn}:iam::aws:policy/AWSXrayWriteOnlyAccess"
}

data "aws_iam_policy_document" "lifecycle" {
  statement {
    actions = ["autoscaling:SetInstanceProtection", "autoscaling:RecordLifecycleActionHeartbeat",
    "autoscaling:CompleteLifecycleAction"]
    resources = ["${local.arn}:autoscaling:*:${local.account}:autoScalingGroup:*:autoScalingGroupName/${var.name}-*-transceiver"]
  }
}

resource "aws_iam_role_policy" "lifecycle" {
  name   = "lifecycle"
  role   = aws_iam_role.host["transceiver"].name
  policy = data.aws_iam_policy_document.lifecycle.json
}
