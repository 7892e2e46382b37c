variable "name" {
  description = "Prefix of the endpoints' names (the site's)."
  type        = string
}

variable "aws_region" {
  description = "The site's AWS region (endpoint service names are com.amazonaws.<region>.<service>)."
  type        = string
}

variable "vpc_id" {
  description = "The site's VPC."
  type        = string
}

variable "vpc_cidr" {
  description = "The site's VPC CIDR, allowed to reach the interface endpoints on 443."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (one per AZ) for the interface endpoints; empty at edge-only sites, which reach AWS APIs directly."
  type        = list(string)
}

variable "route_table_ids" {
  description = "Route tables that get the S3 gateway endpoint."
  type        = list(string)
}
