variable "name" {
  description = "Prefix of names, tags, secrets and SSM parameters; one mesh per name and account."
  type        = string
  default     = "voicemesh"
}

variable "topology_file" {
  description = "The topology the lab tests; null uses infra/topology.json of this repository."
  type        = string
  default     = null
}

variable "zone" {
  description = "The mesh's DNS zone (callers resolve rtc.<zone>); null keeps the topology's zone."
  type        = string
  default     = null
}

variable "parent_zone_id" {
  description = "Route 53 hosted zone of the zone's parent, to delegate the zone to the edges' geo DNS servers; null leaves the records to put at your registrar (output delegation_records)."
  type        = string
  default     = null
}

variable "image_repository" {
  description = "Container repository of the voicemesh image built from the repository's Dockerfile, without tag (an ECR repository, or a public one)."
  type        = string
}

variable "release" {
  description = "Image tag (or sha256:... digest) every region runs unless release_by_region says otherwise."
  type        = string
}

variable "release_by_region" {
  description = "Image tag per AWS region, for rolling a release out region by region."
  type        = map(string)
  default     = {}
}

variable "geoip_db_s3_uri" {
  description = "s3://bucket/key of the GeoLite2 City database (GeoLite2-City.mmdb) the geo DNS servers read."
  type        = string

  validation {
    condition     = startswith(var.geoip_db_s3_uri, "s3://") && length(split("/", var.geoip_db_s3_uri)) >= 4
    error_message = "The geoip_db_s3_uri value must look like s3://bucket/key."
  }
}

variable "edge_hosts" {
  description = "Hosts per edge PoP, each with its own public address."
  type        = number
  default     = 2
}

variable "edge_ice_tcp" {
  description = "ICE-TCP (RFC 6544) at every edge host for callers whose networks drop UDP: a second private IP and Elastic IP per host, where the relay takes TCP on the WHIP port (443) beside nginx on the first (README \"ICE-TCP on 443\"). false: one address per host, UDP only."
  type        = bool
  default     = true
}

variable "transceivers" {
  description = "Each core region's transceiver fleet: min and max hosts, workers per host (one per vCPU), capacity (sessions per worker), cpu_target (percent average CPU the autoscaling keeps), max_session_s (the longest call in seconds; a terminating host drains that long at most)."
  type        = object({ min = number, max = number, workers = number, capacity = number, cpu_target = number, max_session_s = optional(number, 14400) })
  default     = { min = 2, max = 20, workers = 2, capacity = 50, cpu_target = 50 }
}

variable "agents" {
  description = "Hosts of the built-in echo agent per core region (not created where agent_endpoints names your agent)."
  type        = number
  default     = 2
}

variable "agent_endpoints" {
  description = "Your agent's gRPC endpoint (host:port) by core region name; regions not listed run the echo agent."
  type        = map(string)
  default     = {}
}

variable "instance_types" {
  description = "EC2 types (x86_64) of edge, transceiver, agent and etcd hosts."
  type        = object({ edge = string, transceiver = string, agent = string, etcd = string })
  default     = { edge = "c6in.large", transceiver = "c7i.large", agent = "c7i.large", etcd = "m7i.large" }
}

variable "etcd_image" {
  description = "Container image of etcd for the core regions' clusters."
  type        = string
  default     = "gcr.io/etcd-development/etcd:v3.5.21"
}

variable "amis" {
  description = "The Amazon Linux 2023 (x86_64) AMI every host runs, by AWS region: pinned, and changed on purpose, one region per apply (infra/README.md: rolling changes). Find the current one with: aws ssm get-parameter --region <region> --name /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64."
  type        = map(string)

  validation {
    condition     = alltrue([for ami in values(var.amis) : can(regex("^ami-[0-9a-f]{8,17}$", ami))])
    error_message = "Each amis value must be an AMI id (ami- and 8 to 17 hex digits)."
  }
}

variable "otel_collector_image" {
  description = "Container image of the OpenTelemetry collector each host runs beside its parts (deploy/otel-collector.service: metrics to CloudWatch, traces to X-Ray); empty runs none and the parts export nothing."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.41.1"
}

variable "alarm_emails" {
  description = "Addresses the alarm topic (SNS, us-east-1) mails; each must confirm its subscription. Subscribe a pager to the topic's ARN (output alarm_topic) instead where you have one."
  type        = list(string)
  default     = []
}

variable "acme" {
  description = "Renew the WHIP certificate by ACME DNS-01 on the edges: zone (a validation zone outside the mesh's zone, created in Route 53; delegate it), email (the ACME account's), server (ACME directory URL), renew_days (renew when the certificate expires within this many days), renew_hour (UTC hour of the first edge's slot; each next edge host runs 10 minutes later), lego_image. null: the whip-tls secret is filled by hand."
  type = object({
    zone       = string
    email      = string
    server     = optional(string, "https://acme-v02.api.letsencrypt.org/directory")
    renew_days = optional(number, 30)
    renew_hour = optional(number, 3)
    lego_image = optional(string, "goacme/lego:v4.19.2")
  })
  default = null
}
