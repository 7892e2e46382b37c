# The whole mesh, planned and applied against a mocked AWS: every region, PoP and core region
# of infra/topology.json is deployed with the topology's ports (the runs without a state_key).
#
# The runs with state_key "two_regions" render a two-region cut of the topology
# (tests/fixtures/topology-two-regions.json: infra/topology.json cut to Frankfurt, London and Ashburn,
# checked by tests/test_terraform.py): every node is given every region's etcd cluster and its home
# among them, each edge its failover order from the topology's RTTs, and the backbone rules let every
# site reach every region's etcd and transceivers.
#
# The runs with state_key "operations" check changes that keep calls and the operations around the
# mesh: the pinned AMI, the transceivers' drain hook and instance refresh, VPC endpoints, alarms, the
# telemetry sidecar and ACME.
#
# The run with state_key "ice_tcp_off" renders that cut without ICE-TCP at the edges (edge_ice_tcp).
#
# One file, so the ten mock providers (terraform test has no include) are written once; each state_key
# starts from an empty state, as a file of its own would.

test {
  # Runs of different state keys apply and plan side by side.
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
  # Each edge host's Elastic IPs their own addresses (the mock's default is one address for all):
  # 198.51.100.<10 x the PoP's place in the topology + the host's number>, and 100 more for its
  # ICE-TCP address. Frankfurt's first host's interface has its own private IPs too.
  override_resource {
    target = module.region_eu_central_1.module.edge_pop["edge-fra"].aws_network_interface.host["edge-fra-1"]
    values = { private_ip = "10.64.0.10", private_ips = ["10.64.0.10", "10.64.0.20"] }
  }

  override_resource {
    target = module.region_eu_central_1.module.edge_pop["edge-fra"].aws_eip.host["edge-fra-1"]
    values = { public_ip = "198.51.100.11" }
  }

  override_resource {
    target = module.region_eu_central_1.module.edge_pop["edge-fra"].aws_eip.tcp["edge-fra-1"]
    values = { public_ip = "198.51.100.111" }
  }

  override_resource {
    target = module.region_eu_central_1.module.edge_pop["edge-fra"].aws_eip.host["edge-fra-2"]
    values = { public_ip = "198.51.100.12" }
  }

  override_resource {
    target = module.region_eu_central_1.module.edge_pop["edge-fra"].aws_eip.tcp["edge-fra-2"]
    values = { public_ip = "198.51.100.112" }
  }

  override_resource {
    target = module.region_eu_west_2.module.edge_pop["edge-lon"].aws_eip.host["edge-lon-1"]
    values = { public_ip = "198.51.100.21" }
  }

  override_resource {
    target = module.region_eu_west_2.module.edge_pop["edge-lon"].aws_eip.tcp["edge-lon-1"]
    values = { public_ip = "198.51.100.121" }
  }

  override_resource {
    target = module.region_eu_west_2.module.edge_pop["edge-lon"].aws_eip.host["edge-lon-2"]
    values = { public_ip = "198.51.100.22" }
  }

  override_resource {
    target = module.region_eu_west_2.module.edge_pop["edge-lon"].aws_eip.tcp["edge-lon-2"]
    values = { public_ip = "198.51.100.122" }
  }

  override_resource {
    target = module.region_us_east_1.module.edge_pop["edge-iad"].aws_eip.host["edge-iad-1"]
    values = { public_ip = "198.51.100.31" }
  }

  override_resource {
    target = module.region_us_east_1.module.edge_pop["edge-iad"].aws_eip.tcp["edge-iad-1"]
    values = { public_ip = "198.51.100.131" }
  }

  override_resource {
    target = module.region_us_east_1.module.edge_pop["edge-iad"].aws_eip.host["edge-iad-2"]
    values = { public_ip = "198.51.100.32" }
  }

  override_resource {
    target = module.region_us_east_1.module.edge_pop["edge-iad"].aws_eip.tcp["edge-iad-2"]
    values = { public_ip = "198.51.100.132" }
  }

  override_resource {
    target = module.region_us_west_1.module.edge_pop["edge-sjc"].aws_eip.host["edge-sjc-1"]
    values = { public_ip = "198.51.100.41" }
  }

  override_resource {
    target = module.region_us_west_1.module.edge_pop["edge-sjc"].aws_eip.tcp["edge-sjc-1"]
    values = { public_ip = "198.51.100.141" }
  }

  override_resource {
    target = module.region_us_west_1.module.edge_pop["edge-sjc"].aws_eip.host["edge-sjc-2"]
    values = { public_ip = "198.51.100.42" }
  }

  override_resource {
    target = module.region_us_west_1.module.edge_pop["edge-sjc"].aws_eip.tcp["edge-sjc-2"]
    values = { public_ip = "198.51.100.142" }
  }

  override_resource {
    target = module.region_sa_east_1.module.edge_pop["edge-gru"].aws_eip.host["edge-gru-1"]
    values = { public_ip = "198.51.100.51" }
  }

  override_resource {
    target = module.region_sa_east_1.module.edge_pop["edge-gru"].aws_eip.tcp["edge-gru-1"]
    values = { public_ip = "198.51.100.151" }
  }

  override_resource {
    target = module.region_sa_east_1.module.edge_pop["edge-gru"].aws_eip.host["edge-gru-2"]
    values = { public_ip = "198.51.100.52" }
  }

  override_resource {
    target = module.region_sa_east_1.module.edge_pop["edge-gru"].aws_eip.tcp["edge-gru-2"]
    values = { public_ip = "198.51.100.152" }
  }

  override_resource {
    target = module.region_ap_southeast_1.module.edge_pop["edge-sin"].aws_eip.host["edge-sin-1"]
    values = { public_ip = "198.51.100.61" }
  }

  override_resource {
    target = module.region_ap_southeast_1.module.edge_pop["edge-sin"].aws_eip.tcp["edge-sin-1"]
    values = { public_ip = "198.51.100.161" }
  }

  override_resource {
    target = module.region_ap_southeast_1.module.edge_pop["edge-sin"].aws_eip.host["edge-sin-2"]
    values = { public_ip = "198.51.100.62" }
  }

  override_resource {
    target = module.region_ap_southeast_1.module.edge_pop["edge-sin"].aws_eip.tcp["edge-sin-2"]
    values = { public_ip = "198.51.100.162" }
  }

  override_resource {
    target = module.region_ap_northeast_1.module.edge_pop["edge-nrt"].aws_eip.host["edge-nrt-1"]
    values = { public_ip = "198.51.100.71" }
  }

  override_resource {
    target = module.region_ap_northeast_1.module.edge_pop["edge-nrt"].aws_eip.tcp["edge-nrt-1"]
    values = { public_ip = "198.51.100.171" }
  }

  override_resource {
    target = module.region_ap_northeast_1.module.edge_pop["edge-nrt"].aws_eip.host["edge-nrt-2"]
    values = { public_ip = "198.51.100.72" }
  }

  override_resource {
    target = module.region_ap_northeast_1.module.edge_pop["edge-nrt"].aws_eip.tcp["edge-nrt-2"]
    values = { public_ip = "198.51.100.172" }
  }

  override_resource {
    target = module.region_ap_southeast_2.module.edge_pop["edge-syd"].aws_eip.host["edge-syd-1"]
    values = { public_ip = "198.51.100.81" }
  }

  override_resource {
    target = module.region_ap_southeast_2.module.edge_pop["edge-syd"].aws_eip.tcp["edge-syd-1"]
    values = { public_ip = "198.51.100.181" }
  }

  override_resource {
    target = module.region_ap_southeast_2.module.edge_pop["edge-syd"].aws_eip.host["edge-syd-2"]
    values = { public_ip = "198.51.100.82" }
  }

  override_resource {
    target = module.region_ap_southeast_2.module.edge_pop["edge-syd"].aws_eip.tcp["edge-syd-2"]
    values = { public_ip = "198.51.100.182" }
  }

  override_resource {
    target = module.region_ap_south_1.module.edge_pop["edge-bom"].aws_eip.host["edge-bom-1"]
    values = { public_ip = "198.51.100.91" }
  }

  override_resource {
    target = module.region_ap_south_1.module.edge_pop["edge-bom"].aws_eip.tcp["edge-bom-1"]
    values = { public_ip = "198.51.100.191" }
  }

  override_resource {
    target = module.region_ap_south_1.module.edge_pop["edge-bom"].aws_eip.host["edge-bom-2"]
    values = { public_ip = "198.51.100.92" }
  }

  override_resource {
    target = module.region_ap_south_1.module.edge_pop["edge-bom"].aws_eip.tcp["edge-bom-2"]
    values = { public_ip = "198.51.100.192" }
  }

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
    condition     = contains(output.delegation_records, "voicemesh.test. 3600 IN NS ns-edge-fra.voicemesh.test.") && contains(output.delegation_records, "ns-edge-syd.voicemesh.test. 3600 IN A 198.51.100.81") && contains(output.delegation_records, "ns-edge-syd.voicemesh.test. 3600 IN A 198.51.100.82")
    error_message = "The zone is delegated to a name server per PoP, with glue for each of its hosts."
  }
  assert {
    condition     = strcontains(local.name_servers_spec, "ns-edge-fra.voicemesh.test=198.51.100.11,ns-edge-fra.voicemesh.test=198.51.100.12,ns-edge-gru.voicemesh.test=198.51.100.51,")
    error_message = "The geo DNS servers learn every PoP's name server and addresses."
  }
  assert {
    condition     = alltrue([for id, hosts in output.edges : jsonencode(sort(local.name_servers["ns-${id}.voicemesh.test"])) == jsonencode(sort([for host in values(hosts) : host.public_ip]))]) && length(distinct(flatten(values(local.name_servers)))) == 9 * 2
    error_message = "Each PoP's name server has the Elastic IPs of that PoP's hosts, each host its own: ${jsonencode(local.name_servers)}"
  }
  assert {
    condition     = length(module.dns_delegation.records) == 9 + 9 * 2
    error_message = "One NS record per PoP and one glue record per edge host."
  }
  assert {
    condition     = alltrue(flatten([for hosts in values(output.edges) : [for h in values(hosts) : h.tcp_public_ip != "" && h.tcp_health_check_id != ""]])) && length(distinct(flatten([for hosts in values(output.edges) : [for h in values(hosts) : [h.public_ip, h.tcp_public_ip]]]))) == 9 * 2 * 2
    error_message = "Every edge host has a second Elastic IP of its own for ICE-TCP, watched by a health check."
  }
  assert {
    condition     = output.edges["edge-fra"]["edge-fra-1"].tcp_private_ip == "10.64.0.20" && output.edges["edge-fra"]["edge-fra-1"].private_ip == "10.64.0.10" && output.edges["edge-fra"]["edge-fra-1"].tcp_public_ip == "198.51.100.111"
    error_message = "The relay's address is the interface's secondary private IP, with the second Elastic IP."
  }
  assert {
    condition     = jsondecode(module.region_eu_central_1.edge_host_json["edge-fra-1"]).parts.edge.settings.edge.relay_tcp == "10.64.0.20:443" && jsondecode(module.region_eu_central_1.edge_host_json["edge-fra-1"]).parts.edge.settings.edge.advertise_tcp == "198.51.100.111:443"
    error_message = "The relay binds ICE-TCP on the secondary private IP's 443 and advertises the second Elastic IP."
  }
  assert {
    condition     = jsondecode(module.region_eu_central_1.edge_host_json["edge-fra-1"]).parts.edge.docker_options == ["--user", "0", "--cap-add", "NET_BIND_SERVICE"]
    error_message = "The edge's container may bind 443 (and nothing else is added)."
  }
  assert {
    condition     = strcontains(module.region_eu_central_1.edge_whip_nginx_conf["edge-fra-1"], "listen 10.64.0.10:443 ssl;") && length(regexall("listen ", module.region_eu_central_1.edge_whip_nginx_conf["edge-fra-1"])) == 1
    error_message = "nginx holds 443 on the host's first private IP only."
  }
  assert {
    condition     = length(aws_cloudwatch_metric_alarm.edge_ice_tcp_unreachable) == 9 * 2 && aws_cloudwatch_metric_alarm.edge_ice_tcp_unreachable["edge-fra-1"].dimensions.HealthCheckId == output.edges["edge-fra"]["edge-fra-1"].tcp_health_check_id
    error_message = "Each edge host's ICE-TCP health check feeds an alarm."
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

run "every_node_reads_every_region_and_registers_at_home" {
  # Applied: an edge's host.json names its interface's private IP and its Elastic IPs (ICE-TCP).
  state_key = "two_regions"

  variables {
    topology_file = "tests/fixtures/topology-two-regions.json"
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
  state_key = "two_regions"
  command   = plan

  variables {
    topology_file = "tests/fixtures/topology-two-regions.json"
  }

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

run "transceivers_roll_on_the_pinned_ami_and_drain_their_calls" {
  state_key = "operations"
  command   = plan

  variables {
    transceivers = { min = 2, max = 20, workers = 2, capacity = 50, cpu_target = 50, max_session_s = 14400 }
    amis = merge({
      for region in ["ap-northeast-1", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "eu-central-1", "eu-west-2", "sa-east-1", "us-east-1", "us-west-1"] :
      region => "ami-0123456789abcdef0"
    }, { "us-east-1" = "ami-0fedcba9876543210" })
  }

  assert {
    condition     = module.region_us_east_1.cores["us-east"].rolling.image_id == "ami-0fedcba9876543210" && module.region_eu_central_1.cores["eu-central"].rolling.image_id == "ami-0123456789abcdef0"
    error_message = "Each region's hosts run the AMI pinned for that region, so a new AMI rolls one region at a time."
  }
  assert {
    condition = anytrue([for hook in module.region_us_east_1.cores["us-east"].rolling.hooks :
    hook.lifecycle_transition == "autoscaling:EC2_INSTANCE_TERMINATING" && hook.default_result == "CONTINUE" && hook.heartbeat_timeout == 7200 && hook.name == module.region_us_east_1.cores["us-east"].rolling.drain.hook])
    error_message = "A terminating transceiver host waits in a lifecycle hook that its voicemesh-lifecycle completes once its calls end."
  }
  assert {
    condition     = module.region_us_east_1.cores["us-east"].rolling.drain.max_session_s == 14400
    error_message = "A host drains for up to max_session_s."
  }
  assert {
    condition     = one(module.region_us_east_1.cores["us-east"].rolling.instance_refresh[0].preferences).scale_in_protected_instances == "Refresh" && one(module.region_us_east_1.cores["us-east"].rolling.instance_refresh[0].preferences).max_healthy_percentage == 110
    error_message = "An instance refresh launches a new host before it takes an old one, and takes busy (scale-in protected) hosts through the drain hook too."
  }
  assert {
    condition     = toset(module.region_us_east_1.endpoints["iad"]) == toset(["com.amazonaws.us-east-1.ssm", "com.amazonaws.us-east-1.ssmmessages", "com.amazonaws.us-east-1.ec2messages", "com.amazonaws.us-east-1.secretsmanager", "com.amazonaws.us-east-1.ecr.api", "com.amazonaws.us-east-1.ecr.dkr", "com.amazonaws.us-east-1.s3"])
    error_message = "A core site has interface endpoints for SSM, Secrets Manager and ECR, and the S3 gateway."
  }
}

run "a_region_without_a_pinned_ami_is_refused" {
  state_key = "operations"
  command   = plan

  variables {
    amis = { "us-east-1" = "ami-0123456789abcdef0" }
  }

  expect_failures = [terraform_data.amis_are_pinned]
}

run "an_ami_id_must_be_one" {
  state_key = "operations"
  command   = plan

  variables {
    amis = { "us-east-1" = "latest" }
  }

  expect_failures = [var.amis]
}

run "alarms_and_the_acme_validation_zone" {
  state_key = "operations"

  variables {
    alarm_emails = ["oncall@example.com"]
    acme         = { zone = "acme-validation.example.net", email = "certs@example.com" }
  }

  assert {
    condition     = length(aws_cloudwatch_metric_alarm.edge_host_unhealthy) == 9 * 2 && length(aws_cloudwatch_metric_alarm.edge_pop_down) == 9
    error_message = "Each edge host and each PoP has an alarm."
  }
  assert {
    condition     = alltrue([for alarm in values(aws_cloudwatch_metric_alarm.edge_host_unhealthy) : alarm.alarm_actions == toset([aws_sns_topic.alarms.arn])])
    error_message = "Every alarm notifies the alarm topic."
  }
  assert {
    condition     = length(aws_sns_topic_subscription.alarm_email) == 1
    error_message = "The alarm topic mails the on-call address."
  }
  assert {
    condition     = aws_route53_zone.acme[0].name == "acme-validation.example.net" && length(aws_iam_role_policy.acme) == 1
    error_message = "ACME creates the validation zone and lets edge hosts write its records and the whip-tls secret."
  }
  assert {
    condition     = alltrue([for json in concat(values(module.region_eu_west_2.edge_host_json), [module.region_us_east_1.cores["us-east"].transceiver_host_json]) : jsondecode(json).otel_endpoint == "http://127.0.0.1:4317"])
    error_message = "Edge and transceiver hosts run the collector sidecar, and their parts export to it."
  }
}

run "ice_tcp_off_keeps_one_address_per_edge_host" {
  state_key = "ice_tcp_off"

  variables {
    topology_file = "tests/fixtures/topology-two-regions.json"
    edge_ice_tcp  = false
  }

  assert {
    condition     = alltrue(flatten([for hosts in values(output.edges) : [for h in values(hosts) : h.tcp_public_ip == "" && h.tcp_private_ip == "" && h.tcp_health_check_id == ""]])) && length(aws_cloudwatch_metric_alarm.edge_ice_tcp_unreachable) == 0
    error_message = "Without ICE-TCP an edge host has one private IP and one Elastic IP."
  }
  assert {
    condition     = !can(jsondecode(module.region_eu_central_1.edge_host_json["edge-fra-1"]).parts.edge.settings.edge.relay_tcp) && !can(jsondecode(module.region_eu_central_1.edge_host_json["edge-fra-1"]).parts.edge.docker_options)
    error_message = "Without ICE-TCP the relay takes no TCP and its container keeps no capability."
  }
}
