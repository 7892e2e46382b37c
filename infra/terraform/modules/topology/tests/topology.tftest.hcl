# The real topology file: every site, PoP and core region comes out with the right addresses.

variables {
  topology = jsondecode(file("../../../topology.json"))
}

run "real_topology" {
  command = plan

  assert {
    condition     = output.aws_regions == sort(distinct([for s in values(var.topology.sites) : s.aws_region]))
    error_message = "Every site's AWS region is deployed."
  }
  assert {
    condition     = toset(keys(output.edges)) == toset([for e in var.topology.edges : e.id]) && toset(keys(output.cores)) == toset([for c in var.topology.core_regions : c.name])
    error_message = "Every edge PoP and core region of the topology is present."
  }
  assert {
    condition     = output.edges["edge-lon"].home_core == "eu-central" && output.edges["edge-sjc"].home_core == "us-east" && output.edges["edge-syd"].home_core == "ap-southeast"
    error_message = "Edges are homed to the core region with the lowest RTT."
  }
  assert {
    condition     = output.cores["eu-central"].registry == "etcd://10.64.16.10:2379,10.64.32.10:2379,10.64.48.10:2379"
    error_message = "A core region's registry lists its three etcd members on the client port."
  }
  assert {
    condition     = alltrue([for core in values(output.cores) : core.registry_server_name == "etcd.voicemesh.internal"]) && output.registry_server_name == "etcd.voicemesh.internal"
    error_message = "Every core region's etcd members share one name to check their certificates against: a node checks every cluster it reads with one TLS setting."
  }
  assert {
    condition     = output.registry == "etcd://ap-southeast=10.69.16.10:2379,10.69.32.10:2379,10.69.48.10:2379;eu-central=10.64.16.10:2379,10.64.32.10:2379,10.64.48.10:2379;us-east=10.66.16.10:2379,10.66.32.10:2379,10.66.48.10:2379"
    error_message = "The mesh's registry URL names every core region's cluster (registry/regions.py)."
  }
  assert {
    condition     = output.edges["edge-lon"].region_rtt_ms == "ap-southeast=165,eu-central=15,us-east=75" && output.edges["edge-sin"].region_rtt_ms == "ap-southeast=0,eu-central=160,us-east=215"
    error_message = "Each edge's failover order is the topology's backbone RTT from its site to every core region."
  }
  assert {
    condition     = jsonencode(output.sites["fra"].public_subnets) == jsonencode(["10.64.0.0/24", "10.64.1.0/24", "10.64.2.0/24"]) && length(output.sites["lon"].private_subnets) == 0
    error_message = "Core sites get three AZs with private subnets; edge-only sites two public ones."
  }
  assert {
    condition     = jsonencode(output.edges["edge-fra"].hosts[*].name) == jsonencode(["edge-fra-1", "edge-fra-2"]) && output.edges["edge-fra"].ns_name == "ns-edge-fra.voicemesh.test"
    error_message = "Edge hosts and name servers are named after the PoP."
  }
  assert {
    condition     = output.mesh_fqdn == "rtc.voicemesh.test" && output.ports.relay_udp == 3478
    error_message = "The mesh name and ports come from the topology."
  }
}

run "zone_override" {
  command = plan

  variables {
    zone       = "mesh.example.com"
    edge_hosts = 3
  }

  assert {
    condition     = output.mesh_fqdn == "rtc.mesh.example.com" && length(output.edges["edge-iad"].hosts) == 3
    error_message = "The zone and the hosts per PoP can be set."
  }
}

run "overlapping_sites_are_refused" {
  command = plan

  variables {
    topology = merge(jsondecode(file("../../../topology.json")), {
      sites = merge(jsondecode(file("../../../topology.json")).sites, {
        lon = merge(jsondecode(file("../../../topology.json")).sites.lon, { vpc_cidr = "10.64.0.0/16" })
      })
    })
  }

  expect_failures = [var.topology]
}

run "unknown_site_is_refused" {
  command = plan

  variables {
    topology = merge(jsondecode(file("../../../topology.json")), {
      edges = [{ id = "edge-cdg", site = "cdg" }]
    })
  }

  expect_failures = [var.topology]
}
