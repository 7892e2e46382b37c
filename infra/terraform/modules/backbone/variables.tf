variable "name" {
  description = "Name of the global network and the core network."
  type        = string
}

variable "aws_regions" {
  description = "Every AWS region with a site: the core network's edge locations."
  type        = list(string)
}

variable "asn_range" {
  description = "Private ASNs for the core network's edges."
  type        = string
  default     = "64512-64555"
}
