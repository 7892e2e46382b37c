variable "zone" {
  description = "The mesh's zone, served by the geo DNS servers on the edges (for example mesh.example.com)."
  type        = string
}

variable "parent_zone_id" {
  description = "Route 53 hosted zone of the zone's parent (example.com); null creates nothing and leaves the records to put at your registrar (output records)."
  type        = string
  default     = null
}

variable "name_servers" {
  description = "The geo DNS servers: name server name (ns-<edge id>.<zone>) to the public IPs of that PoP's hosts."
  type        = map(list(string))
}

variable "ttl" {
  description = "TTL of the delegation and glue records, seconds."
  type        = number
  default     = 3600
}
