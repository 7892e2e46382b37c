output "vpc_id" {
  description = "The site's VPC."
  value       = aws_vpc.site.id
}

output "public_subnet_ids" {
  description = "Public subnets, one per AZ (edge hosts)."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "Private subnets, one per AZ (core hosts); empty at edge-only sites."
  value       = aws_subnet.private[*].id
}
