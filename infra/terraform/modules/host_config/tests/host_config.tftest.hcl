# Each role's host runs the parts it should, with the topology's ports and no secret values.

variables {
  common = {
    aws_region        = "eu-central-1"
    image_repository  = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/voicemesh"
    release_parameter = "/voicemesh/release"
    ports             = jsondecode(file("../../../topology.json")).ports
  }
}

run "edge" {
  command = plan

  variables {
    role = "edge"
    edge = {
      node_id                = "edge-fra-1"
      pop                    = "edge-fra"
      lat                    = 50.11
      lon                    = 8.68
      registry               = "etcd://eu-central=10.64.16.10:2379;us-east=10.66.16.10:2379"
      registry_home          = "eu-central"
      region_rtt_ms          = "eu-central=0,us-east=90"
      registry_server_name   = "etcd.voicemesh.internal"
      zone                   = "voicemesh.test"
      mesh_name              = "rtc.voicemesh.test"
      name_servers_parameter = "/voicemesh/name-servers"
      geoip_db_s3_uri        = "s3://geo/GeoLite2-City.mmdb"
      token_keys_secret      = "voicemesh/token-keys"
      api_keys_secret        = "voicemesh/api-keys"
      whip_tls_secret        = "voicemesh/whip-tls"
      node_secret            = "voicemesh/node/edge-fra-1"
    }
  }

  assert {
    condition     = jsonencode(output.units) == jsonencode(["voicemesh@dns", "voicemesh@edge", "nginx"])
    error_message = "An edge host runs the relay and WHIP front, the geo DNS server and the TLS front."
  }
  assert {
    condition     = jsondecode(output.host_json).parts.edge.settings.edge.public == "{private_ip}:3478" && jsondecode(output.host_json).parts.edge.settings.edge.advertise == "{public_ip}:3478"
    error_message = "The relay binds the topology's relay port and advertises the host's public address."
  }
  assert {
    condition     = jsondecode(output.host_json).parts.edge.secrets.token_keys == "voicemesh/token-keys" && !strcontains(output.cloud_config, "VOICEMESH_TOKEN_KEYS")
    error_message = "The token keys are a Secrets Manager reference, fetched on the host."
  }
  assert {
    condition     = jsondecode(output.host_json).parts.dns.settings.dns.bind == "{private_ip}:53" && jsondecode(output.host_json).parts.dns.parameters["dns.ns"] == "/voicemesh/name-servers"
    error_message = "The geo DNS server listens on the topology's DNS port and learns the zone's name servers at start."
  }
  assert {
    condition     = jsondecode(output.host_json).parts.edge.secrets["edge.api_keys"] == "voicemesh/api-keys"
    error_message = "The edge takes the app backends' API keys from their secret (WHIP is never open)."
  }
  assert {
    condition     = jsondecode(output.host_json).parts.edge.pki.name == "edge/edge-fra/edge-fra-1" && jsondecode(output.host_json).parts.dns.pki.name == "dns" && jsondecode(output.host_json).parts.edge.pki.secret == "voicemesh/node/edge-fra-1"
    error_message = "The edge talks to etcd as edge/<pop>/<host>, the DNS server as dns, with certificates from the host's node secret."
  }
  assert {
    condition = alltrue([for part in ["edge", "dns"] : jsondecode(output.host_json).parts[part].settings.registry == "etcd://eu-central=10.64.16.10:2379;us-east=10.66.16.10:2379" && jsondecode(output.host_json).parts[part].settings.registry_home == "eu-central"]) && (
    jsondecode(output.host_json).parts.edge.settings.edge.region_rtt_ms == "eu-central=0,us-east=90")
    error_message = "The edge and the DNS server read every region's cluster and register in the home one; the edge fails over in the RTT order it is given."
  }
  assert {
    condition     = startswith(output.cloud_config, "#cloud-config\n")
    error_message = "The user data is a cloud-config document."
  }
}


run "edge_with_ice_tcp" {
  command = plan

  variables {
    role = "edge"
    edge = {
      node_id                = "edge-fra-1"
      pop                    = "edge-fra"
      lat                    = 50.11
      lon                    = 8.68
      registry               = "etcd://eu-central=10.64.16.10:2379;us-east=10.66.16.10:2379"
      registry_home          = "eu-central"
      region_rtt_ms          = "eu-central=0,us-east=90"
      registry_server_name   = "etcd.voicemesh.internal"
      zone                   = "voicemesh.test"
      mesh_name              = "rtc.voicemesh.test"
      name_servers_parameter = "/voicemesh/name-servers"
      geoip_db_s3_uri        = "s3://geo/GeoLite2-City.mmdb"
      token_keys_secret      = "voicemesh/token-keys"
      api_keys_secret        = "voicemesh/api-keys"
      whip_tls_secret        = "voicemesh/whip-tls"
      node_secret            = "voicemesh/node/edge-fra-1"
      whip_listen            = "10.64.0.10:443"
      ice_tcp                = { bind = "10.64.0.20:443", advertise = "198.51.100.111:443" }
    }
  }

  assert {
    condition     = jsondecode(output.host_json).parts.edge.settings.edge.relay_tcp == "10.64.0.20:443" && jsondecode(output.host_json).parts.edge.settings.edge.advertise_tcp == "198.51.100.111:443"
    error_message = "The relay binds ICE-TCP on the host's second address and advertises its second public address."
  }
  assert {
    condition     = jsondecode(output.host_json).parts.edge.docker_options == ["--user", "0", "--cap-add", "NET_BIND_SERVICE"] && jsondecode(output.host_json).parts.edge.uid == 0
    error_message = "The edge's container may bind 443, and its files are its (root's)."
  }
  assert {
    condition     = jsonencode(regexall("(?m)^\\s*listen\\s+(.*);", output.files["/etc/nginx/conf.d/voicemesh-whip.conf"])) == jsonencode([["10.64.0.10:443 ssl"]])
    error_message = "nginx listens on the host's first address only."
  }
}

run "edge_without_ice_tcp" {
  command = plan

  variables {
    role = "edge"
    edge = {
      node_id                = "edge-fra-1"
      pop                    = "edge-fra"
      lat                    = 50.11
      lon                    = 8.68
      registry               = "etcd://eu-central=10.64.16.10:2379;us-east=10.66.16.10:2379"
      registry_home          = "eu-central"
      region_rtt_ms          = "eu-central=0,us-east=90"
      registry_server_name   = "etcd.voicemesh.internal"
      zone                   = "voicemesh.test"
      mesh_name              = "rtc.voicemesh.test"
      name_servers_parameter = "/voicemesh/name-servers"
      geoip_db_s3_uri        = "s3://geo/GeoLite2-City.mmdb"
      token_keys_secret      = "voicemesh/token-keys"
      api_keys_secret        = "voicemesh/api-keys"
      whip_tls_secret        = "voicemesh/whip-tls"
      node_secret            = "voicemesh/node/edge-fra-1"
    }
  }

  assert {
    condition     = !can(jsondecode(output.host_json).parts.edge.settings.edge.relay_tcp) && !can(jsondecode(output.host_json).parts.edge.docker_options) && !can(jsondecode(output.host_json).parts.edge.uid)
    error_message = "Without ICE-TCP the relay takes no TCP and its container keeps no capability."
  }
  assert {
    condition     = jsonencode(regexall("(?m)^\\s*listen\\s+(.*);", output.files["/etc/nginx/conf.d/voicemesh-whip.conf"])) == jsonencode([["443 ssl"]])
    error_message = "Without an address nginx listens on 443 of every address, as before."
  }
}
run "transceiver" {
  command = plan

  variables {
    role = "transceiver"
    transceiver = {
      region               = "eu-central"
      region_id            = 1
      lat                  = 50.11
      lon                  = 8.68
      registry             = "etcd://eu-central=10.64.16.10:2379;us-east=10.66.16.10:2379"
      registry_server_name = "etcd.voicemesh.internal"
      agent                = "agents.internal:50051"
      agent_tls            = true
      workers              = 2
      capacity             = 50
      token_keys_secret    = "voicemesh/token-keys"
      node_secret_prefix   = "voicemesh/node/"
    }
  }

  assert {
    condition     = jsonencode(output.units) == jsonencode(["voicemesh@transceiver-0", "voicemesh@transceiver-1"])
    error_message = "One transceiver worker per core."
  }
  assert {
    condition     = alltrue([for part in values(jsondecode(output.host_json).parts) : part.settings.registry_home == part.settings.transceiver.region])
    error_message = "A transceiver registers and claims in its own region's cluster."
  }
  assert {
    condition     = jsondecode(output.host_json).parts["transceiver-1"].settings.transceiver.backbone == "{private_ip}:7001" && jsondecode(output.host_json).parts["transceiver-1"].settings.transceiver.http == "{private_ip}:8082"
    error_message = "Worker n listens on the topology's backbone and HTTP ports plus n."
  }
  assert {
    condition     = jsonencode(output.transceiver_users) == jsonencode(["transceiver/eu-central/trx-eu-central-{instance_id}-0", "transceiver/eu-central/trx-eu-central-{instance_id}-1"]) && jsondecode(output.host_json).parts["transceiver-1"].pki.name == output.transceiver_users[1]
    error_message = "Each worker is its own etcd user, named after its node id, whose certificate is in the host's node secret."
  }
  assert {
    condition     = jsondecode(output.host_json).parts["transceiver-0"].pki.secret == "voicemesh/node/{instance_id}" && jsondecode(output.host_json).parts["transceiver-0"].pki.settings["transceiver.agent_cert"] == "cert"
    error_message = "The worker's certificate also authenticates it to the agents (mutual TLS)."
  }
}

run "agent" {
  command = plan

  variables {
    role  = "agent"
    agent = { tls_secret = "voicemesh/agent-tls/eu-central" }
  }

  assert {
    condition     = jsondecode(output.host_json).parts.agent.pki == { secret = "voicemesh/agent-tls/eu-central", name = "server", settings = { "agent.tls_cert" = "cert", "agent.tls_key" = "key", "agent.tls_client_ca" = "ca" } }
    error_message = "The agent serves TLS with the region's agent certificate and requires a client certificate from the mesh CA."
  }
}

run "etcd" {
  command = plan

  variables {
    role = "etcd"
    etcd = {
      image          = "gcr.io/etcd-development/etcd:v3.5.21"
      name           = "etcd-eu-central-0"
      ip             = "10.64.16.10"
      cluster        = "voicemesh-eu-central"
      members        = [{ name = "etcd-eu-central-0", ip = "10.64.16.10" }, { name = "etcd-eu-central-1", ip = "10.64.32.10" }]
      server_name    = "etcd.eu-central.voicemesh.internal"
      ca_secret      = "voicemesh/registry-ca"
      plan_parameter = "/voicemesh/registry/eu-central"
    }
  }

  assert {
    condition     = jsonencode(output.units) == jsonencode(["etcd", "voicemesh-registry-init", "voicemesh-registry-init.timer", "voicemesh-etcd-snapshot.timer"]) && strcontains(output.cloud_config, "ETCD_INITIAL_CLUSTER=etcd-eu-central-0=https://10.64.16.10:2380,etcd-eu-central-1=https://10.64.32.10:2380")
    error_message = "An etcd member bootstraps statically with every member's peer URL over TLS, and sets the users up once it answers."
  }
  assert {
    condition     = strcontains(output.cloud_config, "ETCD_LISTEN_CLIENT_URLS=https://10.64.16.10:2379,https://127.0.0.1:2379") && !strcontains(output.cloud_config, "=http://")
    error_message = "etcd serves clients and peers only over TLS."
  }
  assert {
    condition     = strcontains(output.cloud_config, "ETCD_AUTO_COMPACTION_MODE=periodic") && strcontains(output.cloud_config, "ETCD_AUTO_COMPACTION_RETENTION=1h") && strcontains(output.cloud_config, "ETCD_QUOTA_BACKEND_BYTES=4294967296")
    error_message = "etcd compacts its history and has a quota."
  }
  assert {
    condition     = jsondecode(output.host_json).registrar == { ca_secret = "voicemesh/registry-ca", server_name = "etcd.eu-central.voicemesh.internal", plan_parameter = "/voicemesh/registry/eu-central", etcd_client_port = 2379, snapshot_uri = "" } && length(jsondecode(output.host_json).parts) == 0
    error_message = "The etcd host runs the registrar, with the CA's secret and its region's plan."
  }
}

run "unknown_role_is_refused" {
  command = plan

  variables {
    role = "sfu"
  }

  expect_failures = [var.role]
}
