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

# jsonencode'd like iam.tf's documents, so the mocked plan holds it and tests/test_infra_checks.py
# checks it against voicemesh-lifecycle's calls: the mesh's transceiver groups (<name>-<core>-transceiver).
locals {
  lifecycle_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["autoscaling:SetInstanceProtection", "autoscaling:RecordLifecycleActionHeartbeat", "autoscaling:CompleteLifecycleAction"]
      Resource = "${local.arn}:autoscaling:*:${local.account}:autoScalingGroup:*:autoScalingGroupName/${var.name}-*-transceiver"
    }]
  })
}

resource "aws_iam_role_policy" "lifecycle" {
  name   = "lifecycle"
  role   = aws_iam_role.host["transceiver"].name
  policy = local.lifecycle_policy
}
