# voicemesh across regions: what infra/topology.json lists (the file the lab tests) is what
# this deploys. Sites, PoPs and core regions come from the provider-free topology module.

locals {
  topology       = jsondecode(file(coalesce(var.topology_file, "${path.module}/../topology.json")))
  primary_region = module.topology.sites[local.topology.core_regions[0].site].aws_region
  tags           = { "voicemesh:mesh" = var.name }
  # Each host's etcd certificates: <prefix><edge host> or <prefix><transceiver instance id> (iam.tf).
  node_secret_prefix = "${var.name}/node/"

  # Everything each region module needs, in one value.
  mesh = {
    name       = var.name
    sites      = module.topology.sites
    edges      = module.topology.edges
    ice_tcp    = var.edge_ice_tcp
    cores      = module.topology.cores
    ports      = module.topology.ports
    mesh_cidrs = module.topology.mesh_cidrs
    zone       = module.topology.zone
    mesh_fqdn  = module.topology.mesh_fqdn
    # Every node reads every core region's cluster and registers in its home region's (registry/regions.py).
    registry             = module.topology.registry
    registry_server_name = module.topology.registry_server_name
    image_repository     = var.image_repository
    release              = var.release
    release_by_region    = var.release_by_region
    geoip_db_s3_uri      = var.geoip_db_s3_uri
    secrets = {
      token_keys  = aws_secretsmanager_secret.token_keys.name
      api_keys    = aws_secretsmanager_secret.api_keys.name
      whip_tls    = aws_secretsmanager_secret.whip_tls.name
      registry_ca = aws_secretsmanager_secret.registry_ca.name
    }
    node_secret_prefix   = local.node_secret_prefix
    arn                  = local.arn
    account              = local.account
    instance_types       = var.instance_types
    instance_profiles    = { for role, profile in aws_iam_instance_profile.host : role => profile.name }
    transceivers         = var.transceivers
    agents               = var.agents
    agent_endpoints      = var.agent_endpoints
    etcd_image           = var.etcd_image
    amis                 = var.amis
    otel_collector_image = var.otel_collector_image
    acme                 = local.acme
  }

  regions = [
    module.region_ap_northeast_1, module.region_ap_south_1, module.region_ap_southeast_1,
    module.region_ap_southeast_2, module.region_eu_central_1, module.region_eu_west_2,
    module.region_sa_east_1, module.region_us_east_1, module.region_us_west_1,
  ]
  # Outputs named one by one: a whole module object would wait for the name servers it is given.
  edges = merge(
    module.region_ap_northeast_1.edges,
    module.region_ap_south_1.edges,
    module.region_ap_southeast_1.edges,
    module.region_ap_southeast_2.edges,
    module.region_eu_central_1.edges,
    module.region_eu_west_2.edges,
    module.region_sa_east_1.edges,
    module.region_us_east_1.edges,
    module.region_us_west_1.edges,
  )

  # Every PoP's name server with the addresses of its hosts, as the geo DNS servers take them.
  name_servers      = { for id, edge in module.topology.edges : edge.ns_name => [for host in try(local.edges[id], {}) : host.public_ip] }
  name_servers_spec = join(",", flatten([for ns, ips in local.name_servers : [for ip in ips : "${ns}=${ip}"]]))
}

module "topology" {
  source     = "./modules/topology"
  topology   = local.topology
  zone       = var.zone
  edge_hosts = var.edge_hosts
}

module "backbone" {
  source      = "./modules/backbone"
  name        = var.name
  aws_regions = module.topology.aws_regions
}

module "dns_delegation" {
  source         = "./modules/dns_delegation"
  zone           = module.topology.zone
  parent_zone_id = var.parent_zone_id
  name_servers   = local.name_servers
}

# The plan stops here if the topology gained a region that regions.tf does not deploy, or a
# per-region setting names a region or core the topology does not have.
resource "terraform_data" "topology_is_deployed" {
  lifecycle {
    precondition {
      condition     = length(setsubtract(module.topology.aws_regions, [for r in local.regions : r.aws_region])) == 0
      error_message = "Every AWS region of the topology needs a provider (providers.tf) and a module call (regions.tf)."
    }
    precondition {
      condition     = length(setsubtract(keys(var.release_by_region), module.topology.aws_regions)) == 0
      error_message = "The release_by_region keys must be AWS regions of the topology."
    }
    precondition {
      condition     = length(setsubtract(keys(var.agent_endpoints), keys(module.topology.cores))) == 0
      error_message = "The agent_endpoints keys must be core regions of the topology."
    }
  }
}
