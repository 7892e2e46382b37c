# A core region: its three-member etcd cluster (the registry, with TLS and client-certificate auth,
# whose hosts are the region's registrar), the transceiver fleet with CPU autoscaling (each host
# enrolled by the registrar as it launches), and the agent endpoint (the echo agent fleet behind an
# internal NLB, serving TLS, or yours).

locals {
  p                = var.ports
  prefix           = "${var.name}-${var.core.name}"
  run_agents       = var.agent_endpoint == null
  agent            = local.run_agents ? "${aws_lb.agent[0].dns_name}:${local.p.agent_grpc}" : var.agent_endpoint
  agent_tls_secret = "${var.name}/agent-tls/${var.core.name}"
  last_port        = { backbone = local.p.backbone_udp + var.transceivers.workers - 1, http = local.p.transceiver_http + var.transceivers.workers - 1 }
  plan_parameter   = "/${var.name}/registry/${var.core.name}"
  enroll_hook      = "enroll"
  drain_hook       = "drain"
  transceiver_asg  = "${local.prefix}-transceiver"

  # What the registrar (deploy/voicemesh-registrar) makes: etcd users and the certificates of the
  # edges whose home region this is and of the DNS servers on them, the agents' server certificate,
  # and, as each transceiver host launches, its workers' users and certificates; and read-only users
  # for every node of the mesh homed in another core region (mesh).
  registry_plan = {
    core  = var.core.name
    nodes = var.registry_nodes
    mesh  = var.registry_mesh
    servers = local.run_agents ? [{
      secret     = local.agent_tls_secret
      aws_region = var.host_common.aws_region
      hosts      = [aws_lb.agent[0].dns_name]
    }] : []
    transceivers = {
      asg                 = "${local.prefix}-transceiver"
      hook                = local.enroll_hook
      users               = module.transceiver_config.transceiver_users
      secret_prefix       = var.node_secret_prefix
      instance_arn_prefix = "${var.arn}:ec2:${var.host_common.aws_region}:${var.account}:instance/"
    }
  }
}

# --- the registrar ----------------------------------------------------------------------------

resource "aws_ssm_parameter" "registry_plan" {
  # checkov:skip=CKV2_AWS_34:holds no secret (a release tag, a registrar plan of names, name-server addresses); SecureString would add kms:Decrypt to every host for nothing
  name  = local.plan_parameter
  type  = "String"
  tier  = "Intelligent-Tiering"
  value = jsonencode(local.registry_plan)
}

resource "aws_ssm_document" "registrar" {
  name            = "${local.prefix}-registrar"
  document_type   = "Command"
  document_format = "JSON"
  content = jsonencode({
    schemaVersion = "2.2"
    description   = "voicemesh registrar of ${var.core.name}: enroll a launched transceiver host, or retire a terminated one"
    parameters = {
      action     = { type = "String", allowedValues = ["enroll", "retire"] }
      instanceId = { type = "String", allowedPattern = "^i-[0-9a-f]{8,17}$" }
    }
    mainSteps = [{
      action = "aws:runShellScript"
      name   = "registrar"
      inputs = { runCommand = ["/usr/local/bin/voicemesh-registrar {{ action }} {{ instanceId }}"] }
    }]
  })
}

resource "aws_cloudwatch_event_rule" "registrar" {
  for_each    = { enroll = "EC2 Instance-launch Lifecycle Action", retire = "EC2 Instance Terminate Successful" }
  name        = "${local.prefix}-${each.key}-transceiver"
  description = "${each.key} a transceiver host of ${var.core.name} (voicemesh-registrar on the etcd hosts)"
  event_pattern = jsonencode({
    source        = ["aws.autoscaling"]
    "detail-type" = [each.value]
    detail        = { AutoScalingGroupName = ["${local.prefix}-transceiver"] }
  })
}

# Every etcd member of the region runs it (any one alive enrolls; the steps are idempotent).
resource "aws_cloudwatch_event_target" "registrar" {
  for_each = aws_cloudwatch_event_rule.registrar
  rule     = each.value.name
  arn      = aws_ssm_document.registrar.arn
  role_arn = aws_iam_role.registrar_events.arn

  run_command_targets {
    key    = "tag:voicemesh:role"
    values = ["etcd"]
  }
  run_command_targets {
    key    = "tag:voicemesh:core"
    values = [var.core.name]
  }

  input_transformer {
    input_paths    = { instance = "$.detail.EC2InstanceId" }
    input_template = "{\"action\": [\"${each.key}\"], \"instanceId\": [<instance>]}"
  }
}

# jsonencode'd (not aws_iam_policy_document), so a mocked plan holds the documents for the IAM check.
locals {
  events_assume = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "events.amazonaws.com" } }]
  })
  registrar_events = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = "ssm:SendCommand", Resource = aws_ssm_document.registrar.arn },
      {
        Effect    = "Allow"
        Action    = "ssm:SendCommand"
        Resource  = "${var.arn}:ec2:${var.host_common.aws_region}:${var.account}:instance/*"
        Condition = { StringEquals = { "ssm:resourceTag/voicemesh:role" = "etcd" } }
      },
    ]
  })
}

resource "aws_iam_role" "registrar_events" {
  name               = "${local.prefix}-registrar-events"
  assume_role_policy = local.events_assume
}

resource "aws_iam_role_policy" "registrar_events" {
  name   = "run-registrar"
  role   = aws_iam_role.registrar_events.name
  policy = local.registrar_events
}

# --- etcd ---------------------------------------------------------------------------------

resource "aws_security_group" "etcd" {
  name        = "${local.prefix}-etcd"
  description = "etcd of ${var.core.name}: clients from the mesh, peers from each other"
  vpc_id      = var.vpc_id
  tags        = { Name = "${local.prefix}-etcd" }
}

resource "aws_vpc_security_group_ingress_rule" "etcd_client" {
  for_each          = toset(var.mesh_cidrs)
  security_group_id = aws_security_group.etcd.id
  description       = "etcd clients: transceivers, edges, DNS"
  ip_protocol       = "tcp"
  from_port         = local.p.etcd_client
  to_port           = local.p.etcd_client
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "etcd_peer" {
  security_group_id            = aws_security_group.etcd.id
  description                  = "etcd peers"
  ip_protocol                  = "tcp"
  from_port                    = local.p.etcd_peer
  to_port                      = local.p.etcd_peer
  referenced_security_group_id = aws_security_group.etcd.id
}

# Hourly snapshots of each member (deploy/voicemesh-etcd snapshot), kept 14 days; infra/README.md
# restores one.
resource "aws_s3_bucket" "etcd_snapshots" {
  # checkov:skip=CKV_AWS_144:a region's snapshots restore that region's cluster; the other regions run their own
  # checkov:skip=CKV_AWS_18:written only by the region's etcd hosts (iam.tf); CloudTrail records the API calls
  # checkov:skip=CKV2_AWS_62:nothing reacts to a new snapshot
  # checkov:skip=CKV_AWS_145:SSE-S3 encrypts it; the etcd instance role is the only writer and reader
  bucket        = "${local.prefix}-etcd-snapshots-${var.account}"
  force_destroy = true
}

resource "aws_s3_bucket_public_access_block" "etcd_snapshots" {
  bucket                  = aws_s3_bucket.etcd_snapshots.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "etcd_snapshots" {
  bucket = aws_s3_bucket.etcd_snapshots.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "etcd_snapshots" {
  bucket = aws_s3_bucket.etcd_snapshots.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "etcd_snapshots" {
  bucket = aws_s3_bucket.etcd_snapshots.id
  rule {
    id     = "expire"
    status = "Enabled"
    filter {}
    expiration {
      days = 14
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

module "etcd_config" {
  source   = "../host_config"
  for_each = { for m in var.core.etcd : m.name => m }
  role     = "etcd"
  common   = var.host_common
  etcd = {
    image          = var.etcd_image
    name           = each.key
    ip             = each.value.ip
    cluster        = local.prefix
    members        = [for m in var.core.etcd : { name = m.name, ip = m.ip }]
    server_name    = var.core.registry_server_name
    ca_secret      = var.ca_secret
    plan_parameter = local.plan_parameter
    snapshot_uri   = "s3://${aws_s3_bucket.etcd_snapshots.bucket}/${var.core.name}"
  }
}

resource "aws_instance" "etcd" {
  for_each               = { for m in var.core.etcd : m.name => m }
  ami                    = var.ami_id
  instance_type          = var.instance_types.etcd
  iam_instance_profile   = var.instance_profiles.etcd
  subnet_id              = var.subnet_ids[each.value.az]
  private_ip             = each.value.ip
  vpc_security_group_ids = [aws_security_group.etcd.id, aws_security_group.egress.id]
  user_data_base64       = module.etcd_config[each.key].user_data_base64

  ebs_optimized = true
  monitoring    = true

  root_block_device {
    volume_type = "gp3"
    volume_size = 20
    encrypted   = true
  }

  metadata_options {
    http_tokens = "required"
  }

  tags = { Name = each.key, "voicemesh:role" = "etcd", "voicemesh:core" = var.core.name }

  # A member is replaced by hand (etcdctl member remove/add), never by a plan.
  lifecycle {
    ignore_changes = [ami, user_data_base64]
  }
}

# --- transceivers ---------------------------------------------------------------------------

resource "aws_security_group" "egress" {
  name        = "${local.prefix}-egress"
  description = "outbound from core hosts"
  vpc_id      = var.vpc_id
  tags        = { Name = "${local.prefix}-egress" }
}

resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.egress.id
  description       = "image pulls, AWS APIs (through the NAT gateway), the backbone and etcd"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_security_group" "transceiver" {
  name        = "${local.prefix}-transceiver"
  description = "transceivers of ${var.core.name}: backbone frames and offers from edges"
  vpc_id      = var.vpc_id
  tags        = { Name = "${local.prefix}-transceiver" }
}

resource "aws_vpc_security_group_ingress_rule" "transceiver" {
  for_each = {
    for pair in setproduct(["backbone", "http"], var.mesh_cidrs) : "${pair[0]} ${pair[1]}" => {
      protocol = pair[0] == "backbone" ? "udp" : "tcp"
      from     = pair[0] == "backbone" ? local.p.backbone_udp : local.p.transceiver_http
      to       = local.last_port[pair[0]]
      cidr     = pair[1]
    }
  }
  security_group_id = aws_security_group.transceiver.id
  description       = "${split(" ", each.key)[0]} from edges"
  ip_protocol       = each.value.protocol
  from_port         = each.value.from
  to_port           = each.value.to
  cidr_ipv4         = each.value.cidr
}

module "transceiver_config" {
  source = "../host_config"
  role   = "transceiver"
  common = var.host_common
  transceiver = {
    region               = var.core.name
    region_id            = var.core.region_id
    lat                  = var.core.lat
    lon                  = var.core.lon
    registry             = var.registry
    registry_server_name = var.core.registry_server_name
    agent                = local.agent
    agent_tls            = local.run_agents
    workers              = var.transceivers.workers
    capacity             = var.transceivers.capacity
    token_keys_secret    = var.token_keys_secret
    node_secret_prefix   = var.node_secret_prefix
  }
  lifecycle_hook = { asg = local.transceiver_asg, hook = local.drain_hook, max_session_s = var.transceivers.max_session_s }
}

resource "aws_launch_template" "transceiver" {
  name_prefix            = "${local.prefix}-transceiver-"
  image_id               = var.ami_id
  instance_type          = var.instance_types.transceiver
  user_data              = module.transceiver_config.user_data_base64
  vpc_security_group_ids = [aws_security_group.transceiver.id, aws_security_group.egress.id]

  iam_instance_profile {
    name = var.instance_profiles.transceiver
  }

  metadata_options {
    http_tokens = "required"
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${local.prefix}-transceiver", "voicemesh:role" = "transceiver", "voicemesh:core" = var.core.name }
  }
}

resource "aws_autoscaling_group" "transceiver" {
  # checkov:skip=CKV_AWS_153:the launch template's tag_specifications tag every instance the group launches
  name                = local.transceiver_asg
  min_size            = var.transceivers.min
  max_size            = var.transceivers.max
  vpc_zone_identifier = var.subnet_ids
  health_check_type   = "EC2"

  launch_template {
    id      = aws_launch_template.transceiver.id
    version = aws_launch_template.transceiver.latest_version
  }

  # A launched host waits (Pending:Wait) until the registrar has made its etcd users and certificates.
  initial_lifecycle_hook {
    name                 = local.enroll_hook
    lifecycle_transition = "autoscaling:EC2_INSTANCE_LAUNCHING"
    default_result       = "ABANDON"
    heartbeat_timeout    = 600
  }

  # A terminating host (scale-in or refresh) waits in Terminating:Wait while its calls end:
  # deploy/voicemesh-lifecycle on the host drains its parts, records heartbeats and completes the
  # action once no part runs, or after max_session_s. The heartbeat timeout is AWS's largest (2 h);
  # the action's global timeout (100 heartbeats or 48 h) is longer than any call.
  initial_lifecycle_hook {
    name                 = local.drain_hook
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    default_result       = "CONTINUE"
    heartbeat_timeout    = min(var.transceivers.max_session_s, 7200)
  }

  # Hosts with live calls protect themselves from scale-in (deploy/voicemesh-lifecycle), so a
  # scale-in only takes idle hosts.
  protect_from_scale_in = false

  # A new launch template (new AMI or settings) replaces hosts a few at a time: a new host is
  # launched before an old one is taken out (max_healthy_percentage 110), and protected (busy)
  # hosts are refreshed too, each through the drain hook above.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage       = 90
      max_healthy_percentage       = 110
      scale_in_protected_instances = "Refresh"
      standby_instances            = "Wait"
      instance_warmup              = 120
    }
  }

  depends_on = [aws_instance.etcd, aws_cloudwatch_event_target.registrar, aws_ssm_parameter.registry_plan]
}

resource "aws_autoscaling_policy" "transceiver_cpu" {
  name                   = "${local.prefix}-transceiver-cpu"
  autoscaling_group_name = aws_autoscaling_group.transceiver.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    target_value = var.transceivers.cpu_target
    predefined_metric_specification {
      predefined_metric_type = "ASGAverageCPUUtilization"
    }
  }
}

# --- agents ----------------------------------------------------------------------------------

resource "aws_security_group" "agent" {
  count       = local.run_agents ? 1 : 0
  name        = "${local.prefix}-agent"
  description = "echo agents of ${var.core.name}: gRPC from transceivers through the NLB"
  vpc_id      = var.vpc_id
  tags        = { Name = "${local.prefix}-agent" }
}

resource "aws_vpc_security_group_ingress_rule" "agent" {
  count             = local.run_agents ? 1 : 0
  security_group_id = aws_security_group.agent[0].id
  description       = "agent gRPC"
  ip_protocol       = "tcp"
  from_port         = local.p.agent_grpc
  to_port           = local.p.agent_grpc
  cidr_ipv4         = var.vpc_cidr
}

# The agents' server certificate, for the NLB's name; the registrar fills it.
resource "aws_secretsmanager_secret" "agent_tls" {
  # checkov:skip=CKV2_AWS_57:issued again by the registrar (voicemesh-registrar init, every 12 hours) when old or from a rotated CA
  # checkov:skip=CKV_AWS_149:encrypted with the AWS managed key aws/secretsmanager; who reads it is limited by the instance roles (iam.tf), which a customer key would only repeat, in every replica region
  count                   = local.run_agents ? 1 : 0
  name                    = local.agent_tls_secret
  description             = "voicemesh agents' TLS server certificate in ${var.core.name}, issued by the registrar: {\"ca\", \"issued_at\", \"certs\": {\"server\": {\"cert\", \"key\"}}}"
  recovery_window_in_days = 0
}

module "agent_config" {
  source = "../host_config"
  role   = "agent"
  common = var.host_common
  agent  = { tls_secret = local.agent_tls_secret }
}

resource "aws_lb" "agent" {
  # checkov:skip=CKV_AWS_150:an internal load balancer in front of stateless agents, re-created with them; deletion protection would only block terraform destroy
  # checkov:skip=CKV_AWS_91:a TCP listener (gRPC with TLS end to end): NLB access logs exist only for TLS listeners
  count              = local.run_agents ? 1 : 0
  name               = substr("${local.prefix}-agent", 0, 32)
  internal           = true
  load_balancer_type = "network"
  # Agents are spread over the zones; each transceiver may land on any of them.
  enable_cross_zone_load_balancing = true
  subnets                          = var.subnet_ids
}

resource "aws_lb_target_group" "agent" {
  count    = local.run_agents ? 1 : 0
  name     = substr("${local.prefix}-agent", 0, 32)
  port     = local.p.agent_grpc
  protocol = "TCP"
  vpc_id   = var.vpc_id
}

resource "aws_lb_listener" "agent" {
  count             = local.run_agents ? 1 : 0
  load_balancer_arn = aws_lb.agent[0].arn
  port              = local.p.agent_grpc
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.agent[0].arn
  }
}

resource "aws_launch_template" "agent" {
  count                  = local.run_agents ? 1 : 0
  name_prefix            = "${local.prefix}-agent-"
  image_id               = var.ami_id
  instance_type          = var.instance_types.agent
  user_data              = module.agent_config.user_data_base64
  vpc_security_group_ids = [aws_security_group.agent[0].id, aws_security_group.egress.id]

  iam_instance_profile {
    name = var.instance_profiles.agent
  }

  metadata_options {
    http_tokens = "required"
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${local.prefix}-agent", "voicemesh:role" = "agent", "voicemesh:core" = var.core.name }
  }
}

resource "aws_autoscaling_group" "agent" {
  # checkov:skip=CKV_AWS_153:the launch template's tag_specifications tag every instance the group launches
  count               = local.run_agents ? 1 : 0
  name                = "${local.prefix}-agent"
  min_size            = var.agents
  max_size            = var.agents
  vpc_zone_identifier = var.subnet_ids
  target_group_arns   = [aws_lb_target_group.agent[0].arn]
  health_check_type   = "ELB"

  launch_template {
    id      = aws_launch_template.agent[0].id
    version = aws_launch_template.agent[0].latest_version
  }

  instance_refresh {
    strategy = "Rolling"
  }
}
