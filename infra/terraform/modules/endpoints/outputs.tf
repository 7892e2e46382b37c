output "services" {
  description = "Service names with an endpoint in the site: interface endpoints and the S3 gateway."
  value       = concat([for e in aws_vpc_endpoint.interface : e.service_name], [aws_vpc_endpoint.s3.service_name])
}
