# One instance role per kind of host, each allowed only what its start-up reads: the region's
# release, its secrets, the GeoIP database, the image; and SSM for shell access and rollouts.
# A node secret (etcd client certificates) is readable only by the instance its voicemesh:instance
# tag names. The etcd hosts are also the registrar: they read the CA and write the node secrets.

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

locals {
  arn     = "arn:${data.aws_partition.current.partition}"
  account = data.aws_caller_identity.current.account_id
  geoip   = trimprefix(var.geoip_db_s3_uri, "s3://")
  release = "${local.arn}:ssm:*:${local.account}:parameter/${var.name}/release"
  secrets = {
    edge        = ["${local.secret}/token-keys-??????", "${local.secret}/api-keys-??????", "${local.secret}/whip-tls-??????"]
    transceiver = ["${local.secret}/token-keys-??????"]
    agent       = ["${local.secret}/agent-tls/*"]
    etcd        = ["${local.secret}/registry-ca-??????"]
  }
  secret       = "${local.arn}:secretsmanager:*:${local.account}:secret:${var.name}"
  node_secrets = "${local.arn}:secretsmanager:*:${local.account}:secret:${local.node_secret_prefix}*"
  runs_app     = toset(["edge", "transceiver", "agent", "etcd"])
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "host" {
  for_each           = toset(["edge", "transceiver", "agent", "etcd"])
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_instance_profile" "host" {
  for_each = aws_iam_role.host
  name     = each.value.name
  role     = each.value.name
}

resource "aws_iam_role_policy_attachment" "ssm" {
  for_each   = aws_iam_role.host
  role       = each.value.name
  policy_arn = "${local.arn}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_role_policy_attachment" "ecr" {
  for_each   = local.runs_app
  role       = aws_iam_role.host[each.key].name
  policy_arn = "${local.arn}:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly"
}

data "aws_iam_policy_document" "reads" {
  for_each = local.runs_app
  statement {
    actions   = ["ssm:GetParameter"]
    resources = [local.release]
  }
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.secrets[each.key]
  }
  # Its own node secret only: the registrar tags each with the instance it belongs to.
  dynamic "statement" {
    for_each = contains(["edge", "transceiver"], each.key) ? [1] : []
    content {
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [local.node_secrets]
      condition {
        test     = "StringEquals"
        variable = "secretsmanager:ResourceTag/voicemesh:instance"
        values   = ["$${ec2:SourceInstanceARN}"]
      }
    }
  }
  dynamic "statement" {
    for_each = each.key == "edge" ? [1] : []
    content {
      actions   = ["s3:GetObject"]
      resources = ["${local.arn}:s3:::${local.geoip}"]
    }
  }
  # The registrar (deploy/voicemesh-registrar): its region's plan, the node and agent secrets it
  # fills, and the transceiver launches it lets go on.
  dynamic "statement" {
    for_each = each.key == "etcd" ? [1] : []
    content {
      actions   = ["ssm:GetParameter"]
      resources = ["${local.arn}:ssm:*:${local.account}:parameter/${var.name}/registry/*"]
    }
  }
  dynamic "statement" {
    for_each = each.key == "etcd" ? [1] : []
    content {
      actions = ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue", "secretsmanager:CreateSecret",
      "secretsmanager:TagResource", "secretsmanager:DeleteSecret"]
      resources = [local.node_secrets, "${local.secret}/agent-tls/*"]
    }
  }
  dynamic "statement" {
    for_each = each.key == "etcd" ? [1] : []
    content {
      actions   = ["autoscaling:CompleteLifecycleAction"]
      resources = ["${local.arn}:autoscaling:*:${local.account}:autoScalingGroup:*:autoScalingGroupName/${var.name}-*-transceiver"]
    }
  }
  dynamic "statement" {
    for_each = each.key == "etcd" ? [1] : []
    content {
      actions   = ["autoscaling:DescribeAutoScalingInstances", "autoscaling:DescribeAutoScalingGroups"]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "reads" {
  for_each = local.runs_app
  name     = "start-up-reads"
  role     = aws_iam_role.host[each.key].name
  policy   = data.aws_iam_policy_document.reads[each.key].json
}
