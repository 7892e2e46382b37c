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
