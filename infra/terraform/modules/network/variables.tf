variable "name" {
  description = "Name of the site's network, for example voicemesh-fra."
  type        = string
}

variable "site" {
  description = "The site from the topology module: vpc_cidr, az_count, public_subnets, private_subnets (empty for an edge-only site)."
  type = object({
    vpc_cidr        = string
    az_count        = number
    public_subnets  = list(string)
    private_subnets = list(string)
  })
}

variable "peer_cidrs" {
  description = "The other sites' vpc_cidrs, routed over the backbone."
  type        = list(string)
}

variable "core_network" {
  description = "The backbone's Cloud WAN core network (id, arn); each site's VPC attaches to it."
  type        = object({ id = string, arn = string })
}
