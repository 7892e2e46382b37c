# Two core regions from one topology file (tests/fixtures/topology-two-regions.json: infra/topology.json
# cut to Frankfurt, London and Ashburn, checked by tests/test_terraform.py): every node is given every
# region's etcd cluster and its home among them, each edge its failover order from the topology's RTTs,
# and the backbone rules let every site reach every region's etcd and transceivers.

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
  topology_file    = "tests/fixtures/topology-two-regions.json"
  amis = {
    for region in ["eu-central-1", "eu-west-2", "us-east-1", "us-west-1"] : region => "ami-0123456789abcdef0"
  }
}

run "every_node_reads_every_region_and_registers_at_home" {
  command = plan

  variables {
    # Your own agents: no load balancer, whose name a plan does not know, in the transceivers' settings.
    agent_endpoints = { "eu-central" = "agent.example:50051", "us-east" = "agent.example:50051" }
  }

  assert {
    condition     = module.topology.registry == "etcd://eu-central=10.64.16.10:2379,10.64.32.10:2379,10.64.48.10:2379;us-east=10.66.16.10:2379,10.66.32.10:2379,10.66.48.10:2379"
    error_message = "The mesh's registry URL names each core region's three-member cluster."
  }
  assert {
    condition = alltrue(flatten([for r in local.regions : [for host in values(r.edge_host_json) : [
      for part in ["edge", "dns"] : jsondecode(host).parts[part].settings.registry == module.topology.registry
    ]]]))
    error_message = "Every edge host's edge and geo DNS server read every region's cluster."
  }
  assert {
    condition = [for part in ["edge", "dns"] : jsondecode(module.region_eu_west_2.edge_host_json["edge-lon-1"]).parts[part].settings.registry_home] == ["eu-central", "eu-central"] && [
      for part in ["edge", "dns"] : jsondecode(module.region_us_east_1.edge_host_json["edge-iad-2"]).parts[part].settings.registry_home
    ] == ["us-east", "us-east"]
    error_message = "An edge registers in the cluster of its nearest core region: London in eu-central, Ashburn in us-east."
  }
  assert {
    condition     = jsondecode(module.region_eu_west_2.edge_host_json["edge-lon-1"]).parts.edge.settings.edge.region_rtt_ms == "eu-central=15,us-east=75" && jsondecode(module.region_us_east_1.edge_host_json["edge-iad-1"]).parts.edge.settings.edge.region_rtt_ms == "eu-central=90,us-east=0"
    error_message = "Each edge tries core regions in the order of the topology's backbone RTTs from its site."
  }
  assert {
    condition = alltrue(flatten([for name, core in { "eu-central" = module.region_eu_central_1.cores["eu-central"], "us-east" = module.region_us_east_1.cores["us-east"] } : [
      for worker in values(jsondecode(core.transceiver_host_json).parts) : worker.settings.registry == module.topology.registry && worker.settings.registry_home == name
    ]]))
    error_message = "Transceivers read every region's cluster and claim sessions in their own region's."
  }
  assert {
    condition     = length(distinct([for core in values(module.topology.cores) : core.registry_server_name])) == 1
    error_message = "One server name in every member's certificate: a node checks all the clusters it reads against one name."
  }
}

run "backbone_rules_let_every_site_reach_every_region" {
  command = plan

  assert {
    condition = alltrue([for core in [module.region_eu_central_1.cores["eu-central"], module.region_us_east_1.cores["us-east"]] :
    jsonencode(core.backbone_ingress.etcd_client) == jsonencode(["10.64.0.0/16:2379", "10.65.0.0/16:2379", "10.66.0.0/16:2379"])])
    error_message = "Each region's etcd takes clients from every site: its own, the other core region's and London's."
  }
  assert {
    condition = alltrue([for cidr in ["10.64.0.0/16", "10.65.0.0/16", "10.66.0.0/16"] : alltrue([for core in [module.region_eu_central_1.cores["eu-central"], module.region_us_east_1.cores["us-east"]] :
    contains(core.backbone_ingress.transceiver, "udp ${cidr}:7000-7001") && contains(core.backbone_ingress.transceiver, "tcp ${cidr}:8081-8082")])])
    error_message = "Each region's transceivers take backbone frames and offers from every site's edges."
  }
}
