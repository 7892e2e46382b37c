# One instance role per kind of host, each allowed only what its start-up reads: the region's
# release, its secrets, the GeoIP database, the image; and SSM for shell access and rollouts.

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

locals {
  arn     = "arn:${data.aws_partition.current.partition}"
  account = data.aws_caller_identity.current.account_id
  geoip   = trimprefix(var.geoip_db_s3_uri, "s3://")
  release = "${local.arn}:ssm:*:${local.account}:parameter/${var.name}/release"
  secrets = {
    edge        = ["${local.secret}/token-keys-??????", "${local.secret}/whip-tls-??????"]
    transceiver = ["${local.secret}/token-keys-??????"]
    agent       = []
  }
  secret   = "${local.arn}:secretsmanager:*:${local.account}:secret:${var.name}"
  runs_app = toset(["edge", "transceiver", "agent"])
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
  dynamic "statement" {
    for_each = length(local.secrets[each.key]) > 0 ? [1] : []
    content {
      actions   = ["secretsmanager:GetSecretValue"]
      resources = local.secrets[each.key]
    }
  }
  dynamic "statement" {
    for_each = each.key == "edge" ? [1] : []
    content {
      actions   = ["s3:GetObject"]
      resources = ["${local.arn}:s3:::${local.geoip}"]
    }
  }
}

resource "aws_iam_role_policy" "reads" {
  for_each = local.runs_app
  name     = "start-up-reads"
  role     = aws_iam_role.host[each.key].name
  policy   = data.aws_iam_policy_document.reads[each.key].json
}
