variable "topology" {
  description = "infra/topology.json, decoded: zone, mesh_name, ports, sites (each with aws_region and a /16 vpc_cidr), core_regions, edges, rtt_ms."
  type        = any

  validation {
    condition     = alltrue([for s in values(var.topology.sites) : can(cidrnetmask(s.vpc_cidr)) && endswith(s.vpc_cidr, "/16")])
    error_message = "Every site needs a vpc_cidr that is a /16 (its subnets are cut from it)."
  }
  validation {
    condition     = length(distinct([for s in values(var.topology.sites) : s.vpc_cidr])) == length(var.topology.sites)
    error_message = "Sites must not share a vpc_cidr: the backbone routes between them."
  }
  validation {
    condition     = alltrue([for x in concat(var.topology.edges, var.topology.core_regions) : contains(keys(var.topology.sites), x.site)])
    error_message = "Every edge and core region must name a site of the topology."
  }
  validation {
    condition = alltrue([for c in var.topology.core_regions : c.region_id >= 1 && c.region_id <= 255]) && (
    length(distinct([for c in var.topology.core_regions : c.region_id])) == length(var.topology.core_regions))
    error_message = "Core region_ids must be distinct and in 1..255 (they ride in routing tokens as one byte)."
  }
}

variable "zone" {
  description = "The mesh's DNS zone; null keeps the topology's zone (the lab's)."
  type        = string
  default     = null
}

variable "edge_hosts" {
  description = "Hosts per edge PoP, each with its own public address."
  type        = number
  default     = 2

  validation {
    condition     = var.edge_hosts >= 1 && floor(var.edge_hosts) == var.edge_hosts
    error_message = "The edge_hosts value must be a whole number of at least 1."
  }
}
