# An edge PoP: hosts with their own public addresses running the relay (UDP), the WHIP front
# (443) and the geo DNS server (53), behind a small fixed firewall, each watched by a health check.
# With ice_tcp, each host has a second address (a secondary private IP on its interface and a second
# Elastic IP) where the relay takes ICE-TCP on the same TCP port as WHIP (RFC 6544; README "ICE-TCP
# on 443"): nginx binds only the first private address's port, the relay the second's.

locals {
  hosts     = { for h in var.edge.hosts : h.name => h }
  tcp_hosts = var.ice_tcp ? local.hosts : {}
  # The interface's secondary private IP (private_ips holds the primary too), where the relay binds ICE-TCP.
  tcp_private_ip = { for name, _ in local.tcp_hosts : name => one(setsubtract(aws_network_interface.host[name].private_ips, [aws_network_interface.host[name].private_ip])) }

  # From anywhere: only these. Egress stays open so the relay's UDP flows are untracked by the
  # security group (no connection-tracking allowance to run out of under load).
  public_ingress = {
    relay = { protocol = "udp", port = var.ports.relay_udp }
    whip  = { protocol = "tcp", port = var.ports.whip_https } # and ICE-TCP on the second address (ice_tcp)
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

# The addresses live on the interface, not the instance: a replaced host keeps its public IPs.
resource "aws_network_interface" "host" {
  for_each          = local.hosts
  subnet_id         = var.subnet_ids[each.value.az]
  security_groups   = [aws_security_group.edge.id]
  private_ips_count = var.ice_tcp ? 1 : 0
  tags              = { Name = each.key }
}

resource "aws_eip" "host" {
  for_each                  = local.hosts
  domain                    = "vpc"
  network_interface         = aws_network_interface.host[each.key].id
  associate_with_private_ip = aws_network_interface.host[each.key].private_ip
  tags                      = { Name = each.key }
}

# The second public address: the relay's ICE-TCP candidate, on the interface's secondary private IP.
resource "aws_eip" "tcp" {
  for_each                  = local.tcp_hosts
  domain                    = "vpc"
  network_interface         = aws_network_interface.host[each.key].id
  associate_with_private_ip = local.tcp_private_ip[each.key]
  tags                      = { Name = "${each.key}-ice-tcp" }
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
    # nginx's WHIP front on the first private address only, so the relay can hold the second's port.
    whip_listen = "${aws_network_interface.host[each.key].private_ip}:${var.ports.whip_https}"
    ice_tcp = var.ice_tcp ? {
      bind      = "${local.tcp_private_ip[each.key]}:${var.ports.whip_https}"
      advertise = "${aws_eip.tcp[each.key].public_ip}:${var.ports.whip_https}"
    } : null
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
  depends_on = [aws_eip.host, aws_eip.tcp]
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

# And its ICE-TCP listener on the second address: a TCP connection to the port (the relay closes a
# connection that sends no STUN request after its first-packet deadline).
resource "aws_route53_health_check" "tcp" {
  for_each          = local.tcp_hosts
  type              = "TCP"
  ip_address        = aws_eip.tcp[each.key].public_ip
  port              = var.ports.whip_https
  request_interval  = 30
  failure_threshold = 3
  tags              = { Name = "${each.key}-ice-tcp" }
}
