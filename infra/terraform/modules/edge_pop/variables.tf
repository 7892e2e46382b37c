variable "name" {
  description = "Prefix of every name and the Name tag, for example voicemesh."
  type        = string
}

variable "edge" {
  description = "The PoP from the topology module: id, lat, lon, hosts (name, az)."
  type = object({
    id    = string
    lat   = number
    lon   = number
    hosts = list(object({ name = string, az = number }))
  })
}

variable "ports" {
  description = "The topology's ports (relay_udp, whip_https, dns, backbone_udp)."
  type        = map(number)
}

variable "vpc_id" {
  description = "The site's VPC."
  type        = string
}

variable "subnet_ids" {
  description = "The site's public subnets, by AZ index."
  type        = list(string)
}

variable "mesh_cidrs" {
  description = "Every site's vpc_cidr: where transceivers send backbone frames from."
  type        = list(string)
}

variable "ami_id" {
  description = "Amazon Linux 2023 image for the hosts (x86_64)."
  type        = string
}

variable "instance_type" {
  description = "EC2 type of an edge host."
  type        = string
}

variable "instance_profile" {
  description = "IAM instance profile of edge hosts (reads the release, the token keys, the WHIP certificate, the GeoIP database)."
  type        = string
}

variable "host_common" {
  description = "host_config's common settings (aws_region, image_repository, release_parameter, ports, otel_collector_image)."
  type = object({
    aws_region           = string
    image_repository     = string
    release_parameter    = string
    ports                = map(number)
    otel_collector_image = optional(string, "")
  })
}

variable "host_edge" {
  description = "host_config's edge settings shared by the PoP's hosts (registry, registry_home, region_rtt_ms, registry_server_name, zone, mesh_name, name_servers_parameter, geoip_db_s3_uri, token_keys_secret, api_keys_secret, whip_tls_secret), and node_secret_prefix (a host's node secret is <prefix><host>)."
  type = object({
    registry               = string
    registry_home          = string
    region_rtt_ms          = string
    registry_server_name   = string
    zone                   = string
    mesh_name              = string
    name_servers_parameter = string
    geoip_db_s3_uri        = string
    token_keys_secret      = string
    api_keys_secret        = string
    whip_tls_secret        = string
    node_secret_prefix     = string
  })
}

variable "mesh_fqdn" {
  description = "The name callers use (rtc.<zone>): the Host and SNI of the health checks."
  type        = string
}

variable "acme" {
  description = "The WHIP certificate's renewal (host_config's acme without slot) and first_slot, this PoP's first host's slot (the hosts take consecutive slots); null: none."
  type        = any
  default     = null
}

variable "ice_tcp" {
  description = "Give each host a second address (secondary private IP and Elastic IP) where the relay serves ICE-TCP on the whip_https port (README \"ICE-TCP on 443\"); false: UDP only, one address."
  type        = bool
  default     = true
}
