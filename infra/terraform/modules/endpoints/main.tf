# VPC endpoints of one site, so a host's unit start (voicemesh-prepare: SSM parameters, Secrets
# Manager, the image pull from ECR, the GeoIP database from S3) and SSM's agent never need the
# NAT gateway: interface endpoints with private DNS in the private subnets (the core hosts'), and
# an S3 gateway endpoint on every route table (ECR image layers are S3 objects).

locals {
  interface_services = ["ssm", "ssmmessages", "ec2messages", "secretsmanager", "ecr.api", "ecr.dkr"]
  interfaces         = length(var.subnet_ids) > 0 ? toset(local.interface_services) : toset([])
}

resource "aws_security_group" "endpoints" {
  count       = length(local.interfaces) > 0 ? 1 : 0
  name        = "${var.name}-endpoints"
  description = "VPC interface endpoints: HTTPS from the site's hosts"
  vpc_id      = var.vpc_id
  tags        = { Name = "${var.name}-endpoints" }
}

resource "aws_vpc_security_group_ingress_rule" "https" {
  count             = length(local.interfaces) > 0 ? 1 : 0
  security_group_id = aws_security_group.endpoints[0].id
  description       = "HTTPS from the site's VPC"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = local.interfaces
  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${var.aws_region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = var.subnet_ids
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true
  tags                = { Name = "${var.name}-${each.key}" }
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${var.aws_region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.route_table_ids
  tags              = { Name = "${var.name}-s3" }
}
