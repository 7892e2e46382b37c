# The mesh's layout from infra/topology.json, the file the lab reads too: sites and their
# networks, edge PoPs and their hosts, core regions and their etcd members. No provider.

locals {
  zone                 = coalesce(var.zone, var.topology.zone)
  registry_server_name = "etcd.voicemesh.internal"
  sites                = var.topology.sites
  ports                = var.topology.ports

  core_sites = toset([for c in var.topology.core_regions : c.site])

  # Subnets of a site's /16: public /24s from 10.x.0.0 (edges, NAT), private /20s from 10.x.16.0 (core).
  site_networks = {
    for key, site in local.sites : key => {
      az_count        = contains(local.core_sites, key) ? 3 : 2
      public_subnets  = [for i in range(contains(local.core_sites, key) ? 3 : 2) : cidrsubnet(site.vpc_cidr, 8, i)]
      private_subnets = contains(local.core_sites, key) ? [for i in range(3) : cidrsubnet(site.vpc_cidr, 4, i + 1)] : []
    }
  }

  # Median RTT between two sites (0 for the same site), from the topology's rtt_ms table.
  rtt_ms = {
    for pair in setproduct(keys(local.sites), keys(local.sites)) : "${pair[0]}-${pair[1]}" => (
      pair[0] == pair[1] ? 0 : try(var.topology.rtt_ms["${pair[0]}-${pair[1]}"], var.topology.rtt_ms["${pair[1]}-${pair[0]}"])
    )
  }

  cores = {
    for c in var.topology.core_regions : c.name => {
      name       = c.name
      region_id  = c.region_id
      site       = c.site
      aws_region = local.sites[c.site].aws_region
      lat        = local.sites[c.site].lat
      lon        = local.sites[c.site].lon
      # One etcd member per AZ, at a fixed address in that AZ's private subnet (static bootstrap).
      etcd = [for i in range(3) : {
        name   = "etcd-${c.name}-${i}"
        az     = i
        ip     = cidrhost(local.site_networks[c.site].private_subnets[i], 10)
        client = "${cidrhost(local.site_networks[c.site].private_subnets[i], 10)}:${local.ports.etcd_client}"
      }]
    }
  }

  registry = {
    for name, core in local.cores : name => "etcd://${join(",", [for m in core.etcd : m.client])}"
  }
  # What every node is given (registry/regions.py): every core region's cluster, region=members;...
  mesh_registry = "etcd://${join(";", [for name, core in local.cores : "${name}=${join(",", [for m in core.etcd : m.client])}"])}"

  edges = {
    for e in var.topology.edges : e.id => {
      id         = e.id
      site       = e.site
      aws_region = local.sites[e.site].aws_region
      lat        = local.sites[e.site].lat
      lon        = local.sites[e.site].lon
      # The core region with the lowest RTT from this PoP; its etcd is the edge's registry.
      home_core = split(" ", sort([for name, core in local.cores : format("%05d %s", local.rtt_ms["${e.site}-${core.site}"], name)])[0])[1]
      # The order in which the edge tries core regions (region failover): the backbone RTT to each.
      region_rtt_ms = join(",", [for name, core in local.cores : "${name}=${local.rtt_ms["${e.site}-${core.site}"]}"])
      ns_name       = "ns-${e.id}.${local.zone}"
      hosts = [for i in range(var.edge_hosts) : {
        name = "${e.id}-${i + 1}"
        az   = i % local.site_networks[e.site].az_count
      }]
    }
  }
}
