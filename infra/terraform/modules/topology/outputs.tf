output "zone" {
  description = "The mesh's DNS zone, delegated to the geo DNS servers on the edges."
  value       = local.zone
}

output "mesh_fqdn" {
  description = "The name callers resolve, for example rtc.voicemesh.test."
  value       = "${var.topology.mesh_name}.${local.zone}"
}

output "ports" {
  description = "The topology's ports by name (relay_udp, whip_https, dns, backbone_udp, transceiver_http, agent_grpc, etcd_client, etcd_peer)."
  value       = local.ports
}

output "aws_regions" {
  description = "Every AWS region that holds a site, sorted."
  value       = sort(distinct([for s in values(local.sites) : s.aws_region]))
}

output "sites" {
  description = "Sites by key: the topology's fields plus az_count, public_subnets, private_subnets and has_core."
  value = {
    for key, site in local.sites : key => merge(site, local.site_networks[key], {
      key      = key
      has_core = contains(local.core_sites, key)
    })
  }
}

output "mesh_cidrs" {
  description = "Every site's vpc_cidr: the private backbone's address space."
  value       = sort([for s in values(local.sites) : s.vpc_cidr])
}

output "cores" {
  description = "Core regions by name: region_id, site, aws_region, lat, lon, etcd members (name, az, ip, client), registry (its own cluster's etcd:// URL) and registry_server_name (the name every member's certificate carries: clients of several TLS endpoints check it, not the address)."
  value = { for name, core in local.cores : name => merge(core, {
    registry             = local.registry[name]
    registry_server_name = local.registry_server_name
  }) }
}

output "registry" {
  description = "The registry URL every node is given: each core region's cluster as region=members, separated by ';' (registry/regions.py). A node registers in its home region's and reads them all."
  value       = local.mesh_registry
}

output "registry_server_name" {
  description = "The name every etcd member of every core region carries in its certificate: a node checks each cluster it reads (all of them) against this one name, with one TLS setting."
  value       = local.registry_server_name
}

output "edges" {
  description = "Edge PoPs by id: site, aws_region, lat, lon, home_core (lowest-RTT core region: its cluster is where the PoP's hosts register), region_rtt_ms (region=ms,... to every core region, from the topology's rtt_ms), ns_name and hosts (name, az)."
  value       = local.edges
}
