# A transceiver host keeps its calls through scale-in and refresh (deploy/voicemesh-lifecycle), and
# every part exports its telemetry to the host's collector sidecar.

variables {
  common = {
    aws_region           = "eu-central-1"
    image_repository     = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/voicemesh"
    release_parameter    = "/voicemesh/release"
    ports                = jsondecode(file("../../../topology.json")).ports
    otel_collector_image = "public.ecr.aws/aws-observability/aws-otel-collector:v0.41.1"
  }
  role = "transceiver"
  transceiver = {
    region               = "eu-central"
    region_id            = 1
    lat                  = 50.11
    lon                  = 8.68
    registry             = "etcd://10.64.16.10:2379"
    registry_server_name = "etcd.eu-central.voicemesh.internal"
    agent                = "agents.internal:50051"
    agent_tls            = true
    workers              = 2
    capacity             = 50
    token_keys_secret    = "voicemesh/token-keys"
    node_secret_prefix   = "voicemesh/node/"
  }
  lifecycle_hook = { asg = "voicemesh-eu-central-transceiver", hook = "drain", max_session_s = 14400 }
}

run "a_transceiver_host_drains_for_the_longest_call" {
  command = plan

  assert {
    condition     = contains(output.units, "voicemesh-lifecycle.timer") && jsondecode(output.files["/etc/voicemesh/lifecycle.json"]) == { asg = "voicemesh-eu-central-transceiver", hook = "drain", max_session_s = 14400, aws_region = "eu-central-1" }
    error_message = "The host runs voicemesh-lifecycle every 15 s with its group, its termination hook and the drain limit."
  }
  assert {
    condition     = jsondecode(output.host_json).parts["transceiver-1"].settings.transceiver.drain_timeout_s == 14400 && jsondecode(output.host_json).parts["transceiver-1"].settings.transceiver.max_session_s == 14400
    error_message = "A stopped worker waits for its calls as long as the longest call lasts."
  }
}

run "every_part_exports_to_the_hosts_collector" {
  command = plan

  assert {
    condition     = jsondecode(output.host_json).otel_endpoint == "http://127.0.0.1:4317" && contains(output.units, "otel-collector")
    error_message = "Each part's env file points OTEL_EXPORTER_OTLP_ENDPOINT at the collector sidecar, which the host starts."
  }
  assert {
    condition     = strcontains(output.files["/etc/voicemesh/otel.env"], "OTEL_COLLECTOR_IMAGE=public.ecr.aws/aws-observability/aws-otel-collector:v0.41.1") && strcontains(output.files["/etc/voicemesh/otel.env"], "AWS_REGION=eu-central-1")
    error_message = "The collector runs the configured image and exports in the host's region."
  }
}

run "no_collector_no_endpoint" {
  command = plan

  variables {
    common = {
      aws_region        = "eu-central-1"
      image_repository  = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/voicemesh"
      release_parameter = "/voicemesh/release"
      ports             = jsondecode(file("../../../topology.json")).ports
    }
    lifecycle_hook = null
  }

  assert {
    condition     = jsondecode(output.host_json).otel_endpoint == "" && !contains(output.units, "otel-collector") && !contains(output.units, "voicemesh-lifecycle.timer")
    error_message = "Without a collector image the parts export nothing; without a hook no lifecycle timer runs."
  }
}

run "an_edge_renews_the_whip_certificate_at_its_own_slot" {
  command = plan

  variables {
    role        = "edge"
    transceiver = null
    edge = {
      node_id                = "edge-fra-2"
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
      node_secret            = "voicemesh/node/edge-fra-2"
    }
    lifecycle_hook = null
    acme = {
      zone          = "acme-validation.example.net"
      zone_id       = "Z0ACMEEXAMPLE"
      email         = "certs@example.com"
      server        = "https://acme-v02.api.letsencrypt.org/directory"
      renew_days    = 30
      renew_hour    = 3
      lego_image    = "goacme/lego:v4.19.2"
      secret_region = "eu-central-1"
      slot          = 9
    }
  }

  assert {
    condition     = jsondecode(output.host_json).parts.dns.settings.dns.acme_challenge_zone == "acme-validation.example.net"
    error_message = "The geo DNS answers _acme-challenge.<mesh name> with a CNAME into the validation zone."
  }
  assert {
    condition     = strcontains(output.files["/etc/systemd/system/voicemesh-cert-renew.timer"], "OnCalendar=*-*-* 04:30:00 UTC") && contains(output.units, "voicemesh-cert-renew.timer")
    error_message = "Slot 9 renews at 03:00 + 90 minutes, its own time, so edges reload one at a time."
  }
  assert {
    condition     = jsondecode(output.files["/etc/voicemesh/acme.json"]).domain == "rtc.voicemesh.test" && jsondecode(output.files["/etc/voicemesh/acme.json"]).tls_secret == "voicemesh/whip-tls" && jsondecode(output.files["/etc/voicemesh/acme.json"]).zone_id == "Z0ACMEEXAMPLE" && jsondecode(output.files["/etc/voicemesh/acme.json"]).secret_region == "eu-central-1"
    error_message = "The renewal asks for the mesh name's certificate, writes TXT records to the validation zone and stores the result in the whip-tls secret, in its primary region."
  }
}
