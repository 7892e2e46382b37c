variable "name" {
  description = "Prefix of every name and the Name tag, for example voicemesh."
  type        = string
}

variable "core" {
  description = "The core region from the topology module: name, region_id, lat, lon, etcd members (name, az, ip), registry, registry_server_name."
  type = object({
    name                 = string
    region_id            = number
    lat                  = number
    lon                  = number
    etcd                 = list(object({ name = string, az = number, ip = string }))
    registry             = string
    registry_server_name = string
  })
}

variable "registry" {
  description = "The mesh's registry URL (every core region's cluster, region=members;...): the transceivers register in this region's and read them all."
  type        = string
}

variable "ports" {
  description = "The topology's ports (backbone_udp, transceiver_http, agent_grpc, etcd_client, etcd_peer)."
  type        = map(number)
}

variable "vpc_id" {
  description = "The site's VPC."
  type        = string
}

variable "vpc_cidr" {
  description = "The site's vpc_cidr (agents accept the transceivers and the load balancer from it)."
  type        = string
}

variable "subnet_ids" {
  description = "The site's private subnets, by AZ index."
  type        = list(string)
}

variable "mesh_cidrs" {
  description = "Every site's vpc_cidr: where edges reach transceivers and etcd from."
  type        = list(string)
}

variable "ami_id" {
  description = "Amazon Linux 2023 image for the hosts (x86_64)."
  type        = string
}

variable "instance_types" {
  description = "EC2 types: transceiver, agent, etcd."
  type        = object({ transceiver = string, agent = string, etcd = string })
}

variable "instance_profiles" {
  description = "IAM instance profiles: transceiver, agent, etcd."
  type        = object({ transceiver = string, agent = string, etcd = string })
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

variable "token_keys_secret" {
  description = "Secrets Manager name of the routing token keys."
  type        = string
}

variable "transceivers" {
  description = "The transceiver fleet: min and max hosts, workers per host (one per core), capacity (sessions per worker), cpu_target (percent the autoscaling keeps the fleet's average CPU at), max_session_s (the longest call in seconds: how long a terminating host drains)."
  type        = object({ min = number, max = number, workers = number, capacity = number, cpu_target = number, max_session_s = optional(number, 14400) })
}

variable "agents" {
  description = "Hosts of the built-in echo agent behind an internal load balancer; unused when agent_endpoint is set."
  type        = number
}

variable "agent_endpoint" {
  description = "Your agent's gRPC endpoint (host:port) for this region's transceivers; null runs the echo agent fleet."
  type        = string
  default     = null
}

variable "etcd_image" {
  description = "Container image of etcd."
  type        = string
}

variable "ca_secret" {
  description = "Secrets Manager name of the mesh CA ({\"cert\", \"key\"}), which only the etcd hosts (the registrar) read."
  type        = string
}

variable "node_secret_prefix" {
  description = "Prefix of the node secrets (a transceiver host's is <prefix><instance id>)."
  type        = string
}

variable "registry_nodes" {
  description = "Edge hosts whose home region this is: their node secret (name, aws_region) and the etcd users it holds certificates for (edge/<pop>/<host>, dns)."
  type        = list(object({ secret = string, aws_region = string, users = list(string) }))
}

variable "registry_mesh" {
  description = "Every node of the mesh: users (every edge host's edge/<pop>/<host>@<home>, and dns) and, per core region, its transceiver group (core, aws_region, registry URL and server_name of its cluster, asg, users with {instance_id}). The registrar gives the nodes homed elsewhere read-only users in this region's cluster."
  type = object({
    users = list(string)
    cores = list(object({ core = string, aws_region = string, registry = string, server_name = string, asg = string, users = list(string) }))
  })
}

variable "arn" {
  description = "ARN prefix of the partition (arn:aws)."
  type        = string
}

variable "account" {
  description = "The AWS account id."
  type        = string
}
