variable "aws_region" {
  description = "The AWS region this instance deploys; its provider must be configured for it."
  type        = string
}

variable "mesh" {
  description = "The root's settings for every region: name, the topology module's outputs (sites, edges, cores, ports, mesh_cidrs, zone, mesh_fqdn), release and release_by_region, image_repository, secret names, geoip_db_s3_uri, instance types and profiles, fleet sizes, agent_endpoints, etcd_image."
  type        = any
}

variable "core_network" {
  description = "The backbone's core network (id, arn)."
  type        = object({ id = string, arn = string })
}

variable "name_servers" {
  description = "The zone's name servers as name=address,... (every PoP's hosts), for the geo DNS servers; separate from mesh because it comes from every region's addresses."
  type        = string
}
