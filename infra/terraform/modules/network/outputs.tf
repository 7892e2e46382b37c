output "vpc_id" {
  description = "The site's VPC."
  value       = aws_vpc.site.id
}

output "public_subnet_ids" {
  description = "Public subnets, one per AZ (edge hosts), once they reach the internet."
  value       = aws_subnet.public[*].id
  depends_on  = [aws_route.public_internet, aws_route_table_association.public]
}

output "private_subnet_ids" {
  description = "Private subnets, one per AZ (core hosts), once they reach the internet through NAT; empty at edge-only sites."
  value       = aws_subnet.private[*].id
  depends_on  = [aws_route.private_internet, aws_route_table_association.private]
}

output "route_table_ids" {
  description = "Every route table of the site (public, and private where there are private subnets), for gateway endpoints."
  value       = concat([aws_route_table.public.id], aws_route_table.private[*].id)
}

output "vpc_cidr" {
  description = "The site's VPC CIDR."
  value       = aws_vpc.site.cidr_block
}
