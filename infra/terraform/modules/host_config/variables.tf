variable "role" {
  description = "What the host runs: edge (relay, WHIP front, geo DNS), transceiver, agent or etcd."
  type        = string

  validation {
    condition     = contains(["edge", "transceiver", "agent", "etcd"], var.role)
    error_message = "The role must be edge, transceiver, agent or etcd."
  }
}

variable "common" {
  description = "Settings every host shares: aws_region, image_repository (without tag), release_parameter (SSM name holding the image tag), ports (the topology's) and otel_collector_image (the host's OpenTelemetry collector sidecar; empty for none)."
  type = object({
    aws_region           = string
    image_repository     = string
    release_parameter    = string
    ports                = map(number)
    otel_collector_image = optional(string, "")
  })
}

variable "edge" {
  description = "For role edge: node_id (host name), pop (edge id), lat, lon, registry (etcd:// URL of every core region's cluster, region=members;...), registry_home (the core region whose cluster it registers in), region_rtt_ms (region=ms,...: the backbone round trip from the PoP to each core region, the order of region failover), registry_server_name (the name in the etcd members' certificates), zone, mesh_name (rtc.<zone>), name_servers_parameter (SSM name of the zone's name servers, name=address,...), geoip_db_s3_uri; Secrets Manager names: token_keys_secret, api_keys_secret, whip_tls_secret, node_secret (this host's etcd client certificates: its edge user's and dns); whip_listen, nginx's WHIP listen address (the host's first private IP:443; 443 alone: every address); ice_tcp, the relay's ICE-TCP listener: bind (the second private IP:443) and advertise (the second Elastic IP:443, the candidate in answers), null for none."
  type = object({
    node_id                = string
    pop                    = string
    lat                    = number
    lon                    = number
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
    node_secret            = string
    whip_listen            = optional(string, "443")
    ice_tcp                = optional(object({ bind = string, advertise = string }))
  })
  default = null
}

variable "transceiver" {
  description = "For role transceiver: region (also its registry home), region_id, lat, lon, registry (every core region's cluster), registry_server_name, agent (host:port), agent_tls (the agent serves TLS: present the worker's certificate), workers per host (one per core), capacity (sessions per worker), token_keys_secret, node_secret_prefix (the host's certificates are in <prefix><instance id>, made when it launches)."
  type = object({
    region               = string
    region_id            = number
    lat                  = number
    lon                  = number
    registry             = string
    registry_server_name = string
    agent                = string
    agent_tls            = bool
    workers              = number
    capacity             = number
    token_keys_secret    = string
    node_secret_prefix   = string
  })
  default = null
}

variable "agent" {
  description = "For role agent: tls_secret, the Secrets Manager name of the agents' server certificate (its subjectAltName is the address transceivers dial)."
  type = object({
    tls_secret = string
  })
  default = null
}

variable "etcd" {
  description = "For role etcd: image, this member's name and ip, the cluster token, all members (name, ip), server_name (in every member's certificate, with its ip); for the registrar: ca_secret (Secrets Manager name of the mesh CA) and plan_parameter (SSM name of the region's plan: which users and certificates to make); compaction_retention, quota_bytes and snapshot_uri (deploy/voicemesh-etcd)."
  type = object({
    image          = string
    name           = string
    ip             = string
    cluster        = string
    members        = list(object({ name = string, ip = string }))
    server_name    = string
    ca_secret      = string
    plan_parameter = string
    # Auto-compaction keeps this much history (etcd's periodic retention, e.g. "1h").
    compaction_retention = optional(string, "1h")
    # The backend's size limit (etcd refuses writes past it, NOSPACE alarm).
    quota_bytes = optional(number, 4294967296)
    # Where voicemesh-etcd snapshot uploads (s3://bucket/prefix); "" keeps snapshots on the host only.
    snapshot_uri = optional(string, "")
  })
  default = null
}

variable "lifecycle_hook" {
  description = "For role transceiver: the Auto Scaling group (asg) and its termination lifecycle hook (hook) that deploy/voicemesh-lifecycle completes once the host's calls have ended, and max_session_s (seconds: the longest call, so the longest drain); null runs no lifecycle timer."
  type = object({
    asg           = string
    hook          = string
    max_session_s = number
  })
  default = null
}

variable "acme" {
  description = "For role edge: the WHIP certificate's renewal by ACME DNS-01 (deploy/voicemesh-cert-renew): zone (the validation zone the geo DNS CNAMEs _acme-challenge names into), zone_id (its Route 53 id), email, server (ACME directory URL), renew_days, lego_image, secret_region (the AWS region of the whip-tls secret's primary, where the renewed certificate is written), and slot (this host's turn: the renewal runs daily at renew_hour plus 10 minutes per slot, so edges reload one at a time); null: no renewal on this host."
  type = object({
    zone          = string
    zone_id       = string
    email         = string
    server        = string
    renew_days    = number
    renew_hour    = number
    lego_image    = string
    secret_region = string
    slot          = number
  })
  default = null
}
