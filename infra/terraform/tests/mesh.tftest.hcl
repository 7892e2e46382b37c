# The whole mesh, planned and applied against a mocked AWS: every region, PoP and core region
# of infra/topology.json is deployed with the topology's ports.

mock_provider "aws" {
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "ap_northeast_1"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "ap_south_1"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "ap_southeast_1"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "ap_southeast_2"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "eu_central_1"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "eu_west_2"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "sa_east_1"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "us_east_1"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "us_west_1"
  source = "./tests/mocks"
}

variables {
  image_repository = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/voicemesh"
  release          = "0.1.0"
  geoip_db_s3_uri  = "s3://voicemesh-geoip/GeoLite2-City.mmdb"
  parent_zone_id   = "Z0123456789EXAMPLE"
  amis = {
    for region in ["ap-northeast-1", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "eu-central-1", "eu-west-2", "sa-east-1", "us-east-1", "us-west-1"] :
    region => "ami-0123456789abcdef0"
  }
}

run "every_region_of_the_topology" {
  assert {
    condition     = toset([for r in local.regions : r.aws_region]) == toset([for s in values(jsondecode(file("../topology.json")).sites) : s.aws_region])
    error_message = "Each AWS region of the topology is deployed once."
  }
  assert {
    condition     = toset(keys(output.edges)) == toset([for e in jsondecode(file("../topology.json")).edges : e.id]) && alltrue([for hosts in values(output.edges) : length(hosts) == 2])
    error_message = "Every edge PoP of the topology has its hosts."
  }
  assert {
    condition     = toset(flatten([for r in local.regions : keys(r.cores)])) == toset([for c in jsondecode(file("../topology.json")).core_regions : c.name])
    error_message = "Every core region of the topology is deployed."
  }
  assert {
    condition     = output.registries["us-east"] == "etcd://10.66.16.10:2379,10.66.32.10:2379,10.66.48.10:2379"
    error_message = "Each core region has a three-member etcd cluster in its site's private subnets."
  }
  assert {
    condition     = contains(output.delegation_records, "voicemesh.test. 3600 IN NS ns-edge-fra.voicemesh.test.") && contains(output.delegation_records, "ns-edge-syd.voicemesh.test. 3600 IN A 198.51.100.7")
    error_message = "The zone is delegated to a name server per PoP, with glue."
  }
  assert {
    condition     = strcontains(local.name_servers_spec, "ns-edge-fra.voicemesh.test=198.51.100.7,ns-edge-fra.voicemesh.test=198.51.100.7,ns-edge-gru.voicemesh.test=")
    error_message = "The geo DNS servers learn every PoP's name server and addresses."
  }
  assert {
    condition     = length(module.dns_delegation.records) == 9 + 9 * 2
    error_message = "One NS record per PoP and one glue record per edge host."
  }
}

run "every_edge_host_gets_its_certificates_from_its_home_region" {
  command = plan

  assert {
    condition = toset(flatten([for r in local.regions : [for core in values(r.cores) : [for node in core.registry_plan.nodes : node.secret]]])) == toset(flatten([
      for e in jsondecode(file("../topology.json")).edges : [for i in range(2) : "voicemesh/node/${e.id}-${i + 1}"]
    ])) && length(flatten([for r in local.regions : [for core in values(r.cores) : core.registry_plan.nodes]])) == 9 * 2
    error_message = "Each edge host's node secret is filled by exactly one core region's registrar."
  }
  assert {
    condition = contains([for node in module.region_eu_central_1.cores["eu-central"].registry_plan.nodes : jsonencode(node)], jsonencode({
      aws_region = "eu-west-2", secret = "voicemesh/node/edge-lon-1", users = ["edge/edge-lon/edge-lon-1", "dns"]
    }))
    error_message = "The registrar of an edge's home region (eu-central for London) issues its edge and DNS certificates into the secret in the edge's own AWS region."
  }
  assert {
    condition     = jsonencode(module.region_us_east_1.cores["us-east"].registry_plan.transceivers.users) == jsonencode(["transceiver/us-east/trx-us-east-{instance_id}-0", "transceiver/us-east/trx-us-east-{instance_id}-1"]) && module.region_us_east_1.cores["us-east"].registry_plan.transceivers.asg == module.region_us_east_1.cores["us-east"].transceiver_asg
    error_message = "The registrar enrolls each launched host of the region's transceiver group with a user per worker."
  }
  assert {
    condition     = jsonencode(module.region_us_east_1.cores["us-east"].registry_plan.servers) == jsonencode([{ aws_region = "us-east-1", hosts = ["agents.elb.amazonaws.com"], secret = "voicemesh/agent-tls/us-east" }])
    error_message = "The agents' server certificate names the load balancer the transceivers dial."
  }
}

run "every_registrar_makes_every_node_of_the_mesh" {
  command = plan

  assert {
    condition = alltrue([for r in local.regions : alltrue([for core in values(r.cores) : toset(core.registry_plan.mesh.users) == toset(concat(flatten([
      for e in jsondecode(file("../topology.json")).edges : [for i in range(2) : "edge/${e.id}/${e.id}-${i + 1}@${module.topology.edges[e.id].home_core}"]
    ]), ["dns"]))])]) && contains(module.region_us_east_1.cores["us-east"].registry_plan.mesh.users, "edge/edge-lon/edge-lon-1@eu-central")
    error_message = "Every core region's registrar makes a user for every edge host of the mesh, with its home (where it writes; elsewhere it reads), and the DNS servers' user."
  }
  assert {
    condition = alltrue([for r in local.regions : alltrue([for core in values(r.cores) :
      toset([for g in core.registry_plan.mesh.cores : g.core]) == toset(keys(module.topology.cores)) && alltrue([
        for g in core.registry_plan.mesh.cores : jsonencode(g.users) == jsonencode(merge([for r2 in local.regions : r2.cores]...)[g.core].registry_plan.transceivers.users)
        && g.asg == merge([for r2 in local.regions : r2.cores]...)[g.core].transceiver_asg
        && g.aws_region == module.topology.cores[g.core].aws_region && g.registry == module.topology.cores[g.core].registry
      ])
    ])])
    error_message = "Every core region's registrar knows every core region's transceiver group (its Auto Scaling group, AWS region, cluster and worker users as that region enrolls them), so it makes their users as they come into service."
  }
}

run "edge_firewall_and_transceiver_ports_follow_the_topology" {
  command = plan

  assert {
    condition = alltrue([for r in local.regions : alltrue([for pop in values(r.edge_ingress) : pop == {
      relay = { protocol = "udp", port = jsondecode(file("../topology.json")).ports.relay_udp }
      whip  = { protocol = "tcp", port = jsondecode(file("../topology.json")).ports.whip_https }
      dns   = { protocol = "udp", port = jsondecode(file("../topology.json")).ports.dns }
      dnstc = { protocol = "tcp", port = jsondecode(file("../topology.json")).ports.dns }
    }])])
    error_message = "An edge accepts from the internet only the relay port, WHIP on 443 and DNS on 53."
  }
  assert {
    condition     = jsonencode(module.region_eu_central_1.cores["eu-central"].transceiver_ports) == jsonencode({ backbone_udp = [7000, 7001], http = [8081, 8082] })
    error_message = "Transceiver workers listen on the topology's backbone and HTTP ports, one more per worker."
  }
}

run "a_region_the_topology_gained_must_be_wired" {
  command = plan

  variables {
    topology_file = "tests/fixtures/topology-new-region.json"
  }

  expect_failures = [terraform_data.topology_is_deployed]
}

run "release_by_region_names_topology_regions" {
  command = plan

  variables {
    release_by_region = { "eu-north-1" = "0.2.0" }
  }

  expect_failures = [terraform_data.topology_is_deployed]
}

run "agent_endpoint_replaces_the_echo_fleet" {
  command = plan

  variables {
    agent_endpoints = { "us-east" = "agent.internal.example:50051" }
  }

  assert {
    condition     = module.region_us_east_1.cores["us-east"].agent == "agent.internal.example:50051"
    error_message = "A core region listed in agent_endpoints sends its transceivers to that agent."
  }
  assert {
    condition     = length(module.region_us_east_1.cores["us-east"].registry_plan.servers) == 0 && length(module.region_eu_central_1.cores["eu-central"].registry_plan.servers) == 1
    error_message = "No agent certificate is issued where your own agent replaces the echo fleet."
  }
}
