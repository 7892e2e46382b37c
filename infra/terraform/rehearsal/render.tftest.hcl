# The mesh the deploy rehearsal boots (tools/rehearsal, make deploy-rehearsal): the two-region topology
# fixture, applied against the mocked AWS. tools/rehearsal/render.py reads the hosts from this run's
# state (terraform test -test-directory=rehearsal -verbose -json): their user data, as each instance or launch gets it.

test {
  # The two runs have their own states: apply them side by side.
  parallel = true
}

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
  topology_file    = "tests/fixtures/topology-rehearsal.json"
  image_repository = "voicemesh"
  release          = "rehearsal"
  geoip_db_s3_uri  = "s3://voicemesh-geoip/GeoLite2-City.mmdb"
  edge_hosts       = 1
  transceivers     = { min = 2, max = 3, workers = 1, capacity = 20, cpu_target = 50 }
  agents           = 1
  amis             = { "eu-central-1" = "ami-0123456789abcdef0", "us-east-1" = "ami-0123456789abcdef0" }
}

# Each edge host's Elastic IP its own address (the mock's default is one address for all).
override_resource {
  target = module.region_eu_central_1.module.edge_pop["edge-fra"].aws_eip.host["edge-fra-1"]
  values = { public_ip = "198.51.100.11" }
}

override_resource {
  target = module.region_us_east_1.module.edge_pop["edge-iad"].aws_eip.host["edge-iad-1"]
  values = { public_ip = "198.51.100.12" }
}

# Each edge's second Elastic IP (ICE-TCP), and its interface's private IPs: the addresses
# tools/rehearsal/run.py gives the edge's namespace (nginx and the relay bind them).
override_resource {
  target = module.region_eu_central_1.module.edge_pop["edge-fra"].aws_eip.tcp["edge-fra-1"]
  values = { public_ip = "198.51.100.111" }
}

override_resource {
  target = module.region_us_east_1.module.edge_pop["edge-iad"].aws_eip.tcp["edge-iad-1"]
  values = { public_ip = "198.51.100.112" }
}

override_resource {
  target = module.region_eu_central_1.module.edge_pop["edge-fra"].aws_network_interface.host["edge-fra-1"]
  values = { private_ip = "10.64.0.10", private_ips = ["10.64.0.10", "10.64.0.20"] }
}

override_resource {
  target = module.region_us_east_1.module.edge_pop["edge-iad"].aws_network_interface.host["edge-iad-1"]
  values = { private_ip = "10.66.0.10", private_ips = ["10.66.0.10", "10.66.0.20"] }
}

run "two_regions" {
  variables {
    # No collector sidecar: the rehearsal's docker stand-in runs only the voicemesh and etcd images.
    otel_collector_image = ""
  }

  assert {
    condition     = length([for r in local.regions : r if length(r.cores) > 0]) == 2 && length(output.edges) == 2
    error_message = "The rehearsal's topology has two core regions and an edge PoP in each."
  }
  assert {
    condition     = output.registries["eu-central"] == "etcd://10.64.16.10:2379,10.64.32.10:2379,10.64.48.10:2379"
    error_message = "Each core region has three etcd members."
  }
  assert {
    condition     = jsonencode(local.name_servers) == jsonencode({ "ns-edge-fra.voicemesh.test" = ["198.51.100.11"], "ns-edge-iad.voicemesh.test" = ["198.51.100.12"] })
    error_message = "Each PoP's name server has its hosts' own Elastic IPs: ${jsonencode(local.name_servers)}."
  }
}

# The same mesh with ACME renewal on the edges and the collector sidecar on every edge, transceiver
# and agent host, in its own state: not booted (lego needs an ACME server, the collector its image),
# but tests/test_infra_checks.py checks its hosts' units and user data, and the roles' policies
# against voicemesh-cert-renew's and the collector's calls.
run "two_regions_with_acme" {
  state_key = "acme"

  variables {
    acme = { zone = "acme-validation.voicemesh.example", email = "certs@voicemesh.example" }
  }

  assert {
    condition     = length(aws_iam_role_policy.acme) == 1 && alltrue([for json in values(module.region_us_east_1.edge_host_json) : jsondecode(json).otel_endpoint != ""])
    error_message = "Edges renew the WHIP certificate by ACME and run the collector."
  }
}
