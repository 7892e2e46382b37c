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

# Policy documents are jsonencode'd (not aws_iam_policy_document data sources), so the plan holds
# them even against a mocked provider and tests/test_infra_checks.py checks every AWS call the
# deploy's scripts make against them.
locals {
  assume_ec2 = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "ec2.amazonaws.com" } }]
  })
}

resource "aws_iam_role" "host" {
  for_each           = toset(["edge", "transceiver", "agent", "etcd"])
  name               = "${var.name}-${each.key}"
  assume_role_policy = local.assume_ec2
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

locals {
  etcd_reads = [
    { Effect = "Allow", Action = "ssm:GetParameter", Resource = "${local.arn}:ssm:*:${local.account}:parameter/${var.name}/registry/*" },
    {
      Effect = "Allow"
      Action = ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue", "secretsmanager:CreateSecret",
      "secretsmanager:TagResource", "secretsmanager:DeleteSecret"]
      Resource = [local.node_secrets, "${local.secret}/agent-tls/*"]
    },
    {
      Effect   = "Allow"
      Action   = "autoscaling:CompleteLifecycleAction"
      Resource = "${local.arn}:autoscaling:*:${local.account}:autoScalingGroup:*:autoScalingGroupName/${var.name}-*-transceiver"
    },
    # voicemesh-etcd snapshot: its region's snapshot bucket (modules/core_region).
    { Effect = "Allow", Action = "s3:PutObject", Resource = "${local.arn}:s3:::${var.name}-*-etcd-snapshots-${local.account}/*" },
    # Describe calls take no resource-level permission (IAM: "Resource: *" only).
    { Effect = "Allow", Action = ["autoscaling:DescribeAutoScalingInstances", "autoscaling:DescribeAutoScalingGroups"], Resource = "*" },
  ]
  reads = { for role in local.runs_app : role => jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [
        { Effect = "Allow", Action = "ssm:GetParameter", Resource = local.release },
        { Effect = "Allow", Action = "secretsmanager:GetSecretValue", Resource = local.secrets[role] },
      ],
      # Its own node secret only: the registrar tags each with the instance it belongs to.
      [for s in [{
        Effect    = "Allow"
        Action    = "secretsmanager:GetSecretValue"
        Resource  = local.node_secrets
        Condition = { StringEquals = { "secretsmanager:ResourceTag/voicemesh:instance" = "$${ec2:SourceInstanceARN}" } }
      }] : s if contains(["edge", "transceiver"], role)],
      # The geo DNS server's database and the zone's name servers.
      [for s in [
        { Effect = "Allow", Action = "s3:GetObject", Resource = "${local.arn}:s3:::${local.geoip}" },
        { Effect = "Allow", Action = "ssm:GetParameter", Resource = "${local.arn}:ssm:*:${local.account}:parameter/${var.name}/name-servers" },
      ] : s if role == "edge"],
      # The registrar (deploy/voicemesh-registrar): its region's plan, the node and agent secrets it
      # fills, and the transceiver launches it lets go on.
      [for s in local.etcd_reads : s if role == "etcd"],
    )
  }) }
}

resource "aws_iam_role_policy" "reads" {
  for_each = local.runs_app
  name     = "start-up-reads"
  role     = aws_iam_role.host[each.key].name
  policy   = local.reads[each.key]
}
