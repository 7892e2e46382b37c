# An edge PoP: hosts with their own public addresses running the relay (UDP), the WHIP front
# (443) and the geo DNS server (53), behind a small fixed firewall, each watched by a health check.

locals {
  hosts = { for h in var.edge.hosts : h.name => h }

  # From anywhere: only these. Egress stays open so the relay's UDP flows are untracked by the
  # security group (no connection-tracking allowance to run out of under load).
  public_ingress = {
    relay = { protocol = "udp", port = var.ports.relay_udp }
    whip  = { protocol = "tcp", port = var.ports.whip_https }
    dns   = { protocol = "udp", port = var.ports.dns }
    dnstc = { protocol = "tcp", port = var.ports.dns }
  }
}

resource "aws_security_group" "edge" {
  name        = "${var.name}-${var.edge.id}"
  description = "voicemesh edge ${var.edge.id}: relay, WHIP, DNS; backbone from the mesh"
  vpc_id      = var.vpc_id
  tags        = { Name = "${var.name}-${var.edge.id}" }
}

resource "aws_vpc_security_group_ingress_rule" "public" {
  for_each          = local.public_ingress
  security_group_id = aws_security_group.edge.id
  description       = each.key
  ip_protocol       = each.value.protocol
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "backbone" {
  for_each          = toset(var.mesh_cidrs)
  security_group_id = aws_security_group.edge.id
  description       = "backbone frames from transceivers"
  ip_protocol       = "udp"
  from_port         = var.ports.backbone_udp
  to_port           = var.ports.backbone_udp
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.edge.id
  description       = "relay and backbone UDP, AWS APIs, image pulls"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# The address lives on the interface, not the instance: a replaced host keeps its public IP.
resource "aws_network_interface" "host" {
  for_each        = local.hosts
  subnet_id       = var.subnet_ids[each.value.az]
  security_groups = [aws_security_group.edge.id]
  tags            = { Name = each.key }
}

resource "aws_eip" "host" {
  for_each          = local.hosts
  domain            = "vpc"
  network_interface = aws_network_interface.host[each.key].id
  tags              = { Name = each.key }
}

module "host_config" {
  source   = "../host_config"
  for_each = local.hosts
  role     = "edge"
  common   = var.host_common
  edge = merge({ for k, v in var.host_edge : k => v if k != "node_secret_prefix" }, {
    node_id     = each.key
    pop         = var.edge.id
    lat         = var.edge.lat
    lon         = var.edge.lon
    node_secret = "${var.host_edge.node_secret_prefix}${each.key}"
  })
  acme = var.acme == null ? null : merge({ for k, v in var.acme : k => v if k != "first_slot" }, {
    slot = var.acme.first_slot + index(sort(keys(local.hosts)), each.key)
  })
}

# Each host's etcd client certificates (its edge user's and dns'), which the registrar of its home
# core region issues into it. Only the instance named in the tag may read it (iam.tf).
resource "aws_secretsmanager_secret" "node" {
  # checkov:skip=CKV2_AWS_57:issued again by the registrar (voicemesh-registrar init, every 12 hours) when old or from a rotated CA
  # checkov:skip=CKV_AWS_149:encrypted with the AWS managed key aws/secretsmanager; who reads it is limited by the instance roles (iam.tf), which a customer key would only repeat, in every replica region
  for_each                = local.hosts
  name                    = "${var.host_edge.node_secret_prefix}${each.key}"
  description             = "etcd client certificates of ${each.key}, issued by the registrar: {\"ca\", \"issued_at\", \"certs\": {user: {\"cert\", \"key\"}}}"
  recovery_window_in_days = 0
  tags                    = { "voicemesh:instance" = aws_instance.host[each.key].arn }
}

resource "aws_instance" "host" {
  for_each             = local.hosts
  ami                  = var.ami_id
  instance_type        = var.instance_type
  iam_instance_profile = var.instance_profile
  user_data_base64     = module.host_config[each.key].user_data_base64
  ebs_optimized        = true
  monitoring           = true

  root_block_device {
    encrypted = true
  }

  network_interface {
    network_interface_id = aws_network_interface.host[each.key].id
    device_index         = 0
  }

  metadata_options {
    http_tokens = "required"
  }

  tags = { Name = each.key, "voicemesh:role" = "edge", "voicemesh:pop" = var.edge.id }

  # New AMIs and config reach a host when it is replaced on purpose (README: drain an edge).
  lifecycle {
    ignore_changes = [ami, user_data_base64]
  }
  depends_on = [aws_eip.host]
}

# Route 53 checks each host's WHIP front from around the world (HTTPS, /v1/status).
resource "aws_route53_health_check" "host" {
  for_each          = local.hosts
  type              = "HTTPS"
  ip_address        = aws_eip.host[each.key].public_ip
  port              = var.ports.whip_https
  resource_path     = "/v1/status"
  fqdn              = var.mesh_fqdn
  enable_sni        = true
  request_interval  = 30
  failure_threshold = 3
  tags              = { Name = each.key }
}
