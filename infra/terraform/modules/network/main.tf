# One site's VPC: public subnets (edge hosts, NAT), private subnets at core sites (etcd,
# transceivers, agents), and routes to every other site over the backbone (Cloud WAN).

data "aws_availability_zones" "available" {
  # checkov:skip=CKV_AWS_394:the topology's az_count takes the first zones of the sorted names; a zone AWS adds later moves no subnet while the count stays
  state = "available"
}

locals {
  azs     = slice(sort(data.aws_availability_zones.available.names), 0, var.site.az_count)
  private = length(var.site.private_subnets) > 0
}

resource "aws_vpc" "site" {
  # checkov:skip=CKV2_AWS_11:flow logs cost per GB of relay traffic; with the alarms and the collector (issue 15, operations), not here
  cidr_block           = var.site.vpc_cidr
  enable_dns_hostnames = true
  tags                 = { Name = var.name }
}

# The VPC's default security group: no rule, so nothing placed in it by mistake talks to anything.
resource "aws_default_security_group" "site" {
  vpc_id = aws_vpc.site.id
  tags   = { Name = "${var.name}-default" }
}

resource "aws_internet_gateway" "site" {
  vpc_id = aws_vpc.site.id
  tags   = { Name = var.name }
}

resource "aws_subnet" "public" {
  count             = length(var.site.public_subnets)
  vpc_id            = aws_vpc.site.id
  cidr_block        = var.site.public_subnets[count.index]
  availability_zone = local.azs[count.index]
  tags              = { Name = "${var.name}-public-${count.index}" }
}

resource "aws_subnet" "private" {
  count             = length(var.site.private_subnets)
  vpc_id            = aws_vpc.site.id
  cidr_block        = var.site.private_subnets[count.index]
  availability_zone = local.azs[count.index]
  tags              = { Name = "${var.name}-private-${count.index}" }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.site.id
  tags   = { Name = "${var.name}-public" }
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.site.id
}

resource "aws_route_table_association" "public" {
  count          = length(aws_subnet.public)
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_eip" "nat" {
  count  = local.private ? 1 : 0
  domain = "vpc"
  tags   = { Name = "${var.name}-nat" }
}

resource "aws_nat_gateway" "site" {
  count         = local.private ? 1 : 0
  allocation_id = aws_eip.nat[0].id
  subnet_id     = aws_subnet.public[0].id
  tags          = { Name = var.name }
  depends_on    = [aws_internet_gateway.site]
}

resource "aws_route_table" "private" {
  count  = local.private ? 1 : 0
  vpc_id = aws_vpc.site.id
  tags   = { Name = "${var.name}-private" }
}

resource "aws_route" "private_internet" {
  count                  = local.private ? 1 : 0
  route_table_id         = aws_route_table.private[0].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.site[0].id
}

resource "aws_route_table_association" "private" {
  count          = length(aws_subnet.private)
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[0].id
}

# The backbone: the VPC joins the core network from the subnets the mesh's hosts live in.
resource "aws_networkmanager_vpc_attachment" "site" {
  core_network_id = var.core_network.id
  vpc_arn         = aws_vpc.site.arn
  subnet_arns     = local.private ? aws_subnet.private[*].arn : aws_subnet.public[*].arn
  tags            = { Name = var.name }
}

resource "aws_route" "backbone" {
  for_each = {
    for pair in setproduct(local.private ? ["public", "private"] : ["public"], var.peer_cidrs) : "${pair[0]} ${pair[1]}" => {
      table = pair[0] == "public" ? aws_route_table.public.id : aws_route_table.private[0].id
      cidr  = pair[1]
    }
  }
  route_table_id         = each.value.table
  destination_cidr_block = each.value.cidr
  core_network_arn       = var.core_network.arn
  depends_on             = [aws_networkmanager_vpc_attachment.site]
}
