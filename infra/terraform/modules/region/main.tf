# Everything of the mesh in one AWS region: each site's network, its edge PoPs and core regions,
# and the region's release (the image tag its hosts run). One instance per AWS region, because a
# provider is fixed per module call.

locals {
  m     = var.mesh
  sites = { for key, site in local.m.sites : key => site if site.aws_region == var.aws_region }
  edges = { for id, edge in local.m.edges : id => edge if edge.aws_region == var.aws_region }
  cores = { for name, core in local.m.cores : name => core if core.aws_region == var.aws_region }

  # The node secrets of every edge host, by its home core region (the registrar there issues them).
  registry_nodes = {
    for name, core in local.m.cores : name => flatten([
      for edge in values(local.m.edges) : [
        for host in edge.hosts : {
          secret     = "${local.m.node_secret_prefix}${host.name}"
          aws_region = edge.aws_region
          users      = ["edge/${edge.id}/${host.name}", "dns"]
        }
      ] if edge.home_core == name
    ])
  }

  # Every node of the mesh, for every core region's registrar: its cluster gives the nodes homed in other
  # core regions read-only users (registry init --cluster-region; registry/access.py). The static users,
  # an edge's with @<home>, and each core region's transceiver group, whose hosts' users it adds as they
  # are in service (user names as host_config's transceiver_users).
  registry_mesh = {
    users = concat(flatten([
      for edge in values(local.m.edges) : [for host in edge.hosts : "edge/${edge.id}/${host.name}@${edge.home_core}"]
    ]), ["dns"])
    cores = [for name, core in local.m.cores : {
      core        = name
      aws_region  = core.aws_region
      registry    = core.registry
      server_name = core.registry_server_name
      asg         = "${local.m.name}-${name}-transceiver"
      users       = [for w in range(local.m.transceivers.workers) : "transceiver/${name}/trx-${name}-{instance_id}-${w}"]
    }]
  }

  # The pinned AMI (var.amis), never "the newest at plan time": a new AMI is a change made on purpose.
  # A region without one plans with a name no AMI has, and the root's amis_are_pinned stops that plan.
  ami_id = lookup(local.m.amis, var.aws_region, "ami-unpinned")

  host_common = {
    aws_region        = var.aws_region
    image_repository  = local.m.image_repository
    release_parameter = "/${local.m.name}/release"
    ports             = local.m.ports
    # Each host runs its own collector, so telemetry stays in the host's region.
    otel_collector_image = local.m.otel_collector_image
  }
}

# Hosts read it at every start: rolling out a release is this value, then restarts (README).
resource "aws_ssm_parameter" "release" {
  # checkov:skip=CKV2_AWS_34:holds no secret (a release tag, a registrar plan of names, name-server addresses); SecureString would add kms:Decrypt to every host for nothing
  count = length(local.sites) > 0 ? 1 : 0
  name  = local.host_common.release_parameter
  type  = "String"
  value = lookup(local.m.release_by_region, var.aws_region, local.m.release)
}

# The zone's name servers (name=address,...), which the geo DNS servers answer NS queries with.
resource "aws_ssm_parameter" "name_servers" {
  # checkov:skip=CKV2_AWS_34:holds no secret (a release tag, a registrar plan of names, name-server addresses); SecureString would add kms:Decrypt to every host for nothing
  count = length(local.edges) > 0 ? 1 : 0
  name  = "/${local.m.name}/name-servers"
  type  = "String"
  value = var.name_servers
}

module "network" {
  source       = "../network"
  for_each     = local.sites
  name         = "${local.m.name}-${each.key}"
  site         = each.value
  peer_cidrs   = [for cidr in local.m.mesh_cidrs : cidr if cidr != each.value.vpc_cidr]
  core_network = var.core_network
}

module "endpoints" {
  source          = "../endpoints"
  for_each        = local.sites
  name            = "${local.m.name}-${each.key}"
  aws_region      = var.aws_region
  vpc_id          = module.network[each.key].vpc_id
  vpc_cidr        = module.network[each.key].vpc_cidr
  subnet_ids      = module.network[each.key].private_subnet_ids
  route_table_ids = module.network[each.key].route_table_ids
}

module "edge_pop" {
  source           = "../edge_pop"
  for_each         = local.edges
  name             = local.m.name
  edge             = each.value
  ports            = local.m.ports
  vpc_id           = module.network[each.value.site].vpc_id
  subnet_ids       = module.network[each.value.site].public_subnet_ids
  mesh_cidrs       = local.m.mesh_cidrs
  ami_id           = local.ami_id
  instance_type    = local.m.instance_types.edge
  instance_profile = local.m.instance_profiles.edge
  host_common      = local.host_common
  mesh_fqdn        = local.m.mesh_fqdn
  ice_tcp          = local.m.ice_tcp
  host_edge = {
    registry               = local.m.registry
    registry_home          = each.value.home_core
    region_rtt_ms          = each.value.region_rtt_ms
    registry_server_name   = local.m.registry_server_name
    zone                   = local.m.zone
    mesh_name              = local.m.mesh_fqdn
    name_servers_parameter = "/${local.m.name}/name-servers"
    geoip_db_s3_uri        = local.m.geoip_db_s3_uri
    token_keys_secret      = local.m.secrets.token_keys
    api_keys_secret        = local.m.secrets.api_keys
    whip_tls_secret        = local.m.secrets.whip_tls
    node_secret_prefix     = local.m.node_secret_prefix
  }
  # Renewal slots in the order of the mesh's PoPs, so every edge host of the mesh has its own.
  acme = local.m.acme == null ? null : merge(local.m.acme, {
    first_slot = index(sort(keys(local.m.edges)), each.key) * length(each.value.hosts)
  })
  depends_on = [aws_ssm_parameter.release]
}

module "core_region" {
  source             = "../core_region"
  for_each           = local.cores
  name               = local.m.name
  core               = each.value
  registry           = local.m.registry
  ports              = local.m.ports
  vpc_id             = module.network[each.value.site].vpc_id
  vpc_cidr           = local.m.sites[each.value.site].vpc_cidr
  subnet_ids         = module.network[each.value.site].private_subnet_ids
  mesh_cidrs         = local.m.mesh_cidrs
  ami_id             = local.ami_id
  instance_types     = local.m.instance_types
  instance_profiles  = local.m.instance_profiles
  host_common        = local.host_common
  token_keys_secret  = local.m.secrets.token_keys
  ca_secret          = local.m.secrets.registry_ca
  node_secret_prefix = local.m.node_secret_prefix
  registry_nodes     = local.registry_nodes[each.key]
  registry_mesh      = local.registry_mesh
  arn                = local.m.arn
  account            = local.m.account
  transceivers       = local.m.transceivers
  agents             = local.m.agents
  agent_endpoint     = lookup(local.m.agent_endpoints, each.key, null)
  etcd_image         = local.m.etcd_image
  depends_on         = [aws_ssm_parameter.release]
}
