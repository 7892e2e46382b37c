# What a host runs and how it starts: /etc/voicemesh/host.json (no secrets), the systemd units
# and scripts from deploy/, as gzip'd cloud-config user data. No provider.
#
# A part's "pki" names the secret holding its certificate (filled by the registrar on the etcd
# hosts, deploy/voicemesh-registrar), the certificate in it ("name": the etcd user, which is the
# certificate's CN, registry/access.py) and the config keys that take its files.

locals {
  deploy        = "${path.module}/../../../../deploy"
  config_args   = ["--config", "/run/voicemesh/config.toml"]
  otel          = var.common.otel_collector_image != "" && var.role != "etcd"
  otel_endpoint = "http://127.0.0.1:4317"
  p             = var.common.ports

  registry_pki = { registry_ca = "ca", registry_cert = "cert", registry_key = "key" }
  agent_pki    = { "transceiver.agent_ca" = "ca", "transceiver.agent_cert" = "cert", "transceiver.agent_key" = "key" }
  # A transceiver worker's node id and etcd user; {instance_id} is filled in on the host.
  trx_node_id = var.transceiver == null ? [] : [for n in range(var.transceiver.workers) : "trx-${var.transceiver.region}-{instance_id}-${n}"]
  trx_users   = [for id in local.trx_node_id : "transceiver/${var.transceiver.region}/${id}"]

  # merge([for e in ... : {...}]...) is {} without that role's input: one object type either way.
  edge_parts = merge([for e in var.edge == null ? [] : [var.edge] : {
    edge = merge({
      args    = concat(["edge"], local.config_args)
      secrets = { token_keys = e.token_keys_secret, "edge.api_keys" = e.api_keys_secret }
      pki     = { secret = e.node_secret, name = "edge/${e.pop}/${e.node_id}", settings = local.registry_pki }
      settings = {
        registry             = e.registry
        registry_home        = e.registry_home
        registry_server_name = e.registry_server_name
        edge = merge({
          node_id       = e.node_id
          region        = e.pop
          region_rtt_ms = e.region_rtt_ms
          public        = "{private_ip}:${local.p.relay_udp}"
          advertise     = "{public_ip}:${local.p.relay_udp}"
          backbone      = "{private_ip}:${local.p.backbone_udp}"
          http          = "127.0.0.1:8080"
          lat           = e.lat
          lon           = e.lon
          # ICE-TCP (RFC 6544) on the host's second address; the answers carry its Elastic IP.
          }, [for t in e.ice_tcp == null ? [] : [e.ice_tcp] : {
            relay_tcp     = t.bind
            advertise_tcp = t.advertise
        }]...)
      }
      # Binding 443 takes CAP_NET_BIND_SERVICE, which Docker grants only to the container's root
      # (as for dns below); the root file system stays read-only and every other capability dropped.
      }, [for t in e.ice_tcp == null ? [] : [e.ice_tcp] : {
        docker_options = ["--user", "0", "--cap-add", "NET_BIND_SERVICE"]
        uid            = 0
    }]...)
    dns = {
      args           = concat(["dns"], local.config_args)
      docker_options = ["--user", "0", "--cap-add", "NET_BIND_SERVICE"]
      uid            = 0
      parameters     = { "dns.ns" = e.name_servers_parameter }
      pki            = { secret = e.node_secret, name = "dns", settings = local.registry_pki }
      files          = { "/var/lib/voicemesh/GeoLite2-City.mmdb" = e.geoip_db_s3_uri }
      settings = {
        registry             = e.registry
        registry_home        = e.registry_home
        registry_server_name = e.registry_server_name
        dns = {
          zone         = e.zone
          mesh_name    = e.mesh_name
          bind         = "{private_ip}:${local.p.dns}" # the host's own address (EC2 maps the public one to it), not a stub resolver's 0.0.0.0
          geoip_db     = "/var/lib/voicemesh/GeoLite2-City.mmdb"
          default_edge = e.node_id
          # ACME DNS-01: _acme-challenge.<mesh name> is a CNAME into the validation zone.
          acme_challenge_zone = var.acme == null ? "" : var.acme.zone
        }
      }
    }
    whip-tls = { tls_secret = e.whip_tls_secret, tls_dir = "/run/voicemesh/tls" }
  }]...)

  transceiver_parts = var.transceiver == null ? {} : {
    for n in range(var.transceiver.workers) : "transceiver-${n}" => {
      args    = concat(["transceiver"], local.config_args)
      secrets = { token_keys = var.transceiver.token_keys_secret }
      pki = {
        secret   = "${var.transceiver.node_secret_prefix}{instance_id}"
        name     = local.trx_users[n]
        settings = merge(local.registry_pki, var.transceiver.agent_tls ? local.agent_pki : {})
      }
      settings = {
        registry             = var.transceiver.registry
        registry_home        = var.transceiver.region
        registry_server_name = var.transceiver.registry_server_name
        transceiver = {
          node_id   = local.trx_node_id[n]
          region    = var.transceiver.region
          region_id = var.transceiver.region_id
          backbone  = "{private_ip}:${local.p.backbone_udp + n}"
          http      = "{private_ip}:${local.p.transceiver_http + n}"
          capacity  = var.transceiver.capacity
          # A part stopped by deploy/voicemesh-lifecycle drains for as long as the longest call.
          drain_timeout_s = var.lifecycle_hook == null ? 30 : var.lifecycle_hook.max_session_s
          max_session_s   = var.lifecycle_hook == null ? 14400 : var.lifecycle_hook.max_session_s
          agent           = var.transceiver.agent
          lat             = var.transceiver.lat
          lon             = var.transceiver.lon
        }
      }
    }
  }

  # Agents serve TLS and require a transceiver's client certificate (any from the mesh CA).
  agent_parts = merge([for a in var.agent == null ? [] : [var.agent] : {
    agent = {
      args     = concat(["agent"], local.config_args)
      pki      = { secret = a.tls_secret, name = "server", settings = { "agent.tls_cert" = "cert", "agent.tls_key" = "key", "agent.tls_client_ca" = "ca" } }
      settings = { agent = { bind = "0.0.0.0:${local.p.agent_grpc}" } }
    }
  }]...)

  parts = merge(local.edge_parts, local.transceiver_parts, local.agent_parts)

  host = merge({
    aws_region        = var.common.aws_region
    image_repository  = var.common.image_repository
    release_parameter = var.common.release_parameter
    container_uid     = 10001
    parts             = local.parts
    # Every part exports to the host's collector sidecar (deploy/otel-collector.service).
    otel_endpoint = local.otel ? local.otel_endpoint : ""
    }, var.etcd == null ? {} : {
    registrar = {
      ca_secret        = var.etcd.ca_secret
      server_name      = var.etcd.server_name
      plan_parameter   = var.etcd.plan_parameter
      etcd_client_port = local.p.etcd_client
      snapshot_uri     = var.etcd.snapshot_uri
    }
  })

  # TLS settings (certificate files, client-cert-auth) are flags in deploy/etcd.service.
  etcd_env = var.etcd == null ? "" : join("\n", [
    "VOICEMESH_ETCD_IMAGE=${var.etcd.image}",
    "ETCD_NAME=${var.etcd.name}",
    "ETCD_DATA_DIR=/var/lib/etcd",
    "ETCD_LISTEN_PEER_URLS=https://${var.etcd.ip}:${local.p.etcd_peer}",
    "ETCD_LISTEN_CLIENT_URLS=https://${var.etcd.ip}:${local.p.etcd_client},https://127.0.0.1:${local.p.etcd_client}",
    "ETCD_ADVERTISE_CLIENT_URLS=https://${var.etcd.ip}:${local.p.etcd_client}",
    "ETCD_INITIAL_ADVERTISE_PEER_URLS=https://${var.etcd.ip}:${local.p.etcd_peer}",
    "ETCD_INITIAL_CLUSTER=${join(",", [for m in var.etcd.members : "${m.name}=https://${m.ip}:${local.p.etcd_peer}"])}",
    "ETCD_INITIAL_CLUSTER_STATE=new",
    "ETCD_INITIAL_CLUSTER_TOKEN=${var.etcd.cluster}",
    # Each claim and each load report writes a revision: keep an hour of history, cap the database,
    # and cut the raft log (deploy/voicemesh-etcd snapshot defragments hourly).
    "ETCD_AUTO_COMPACTION_MODE=periodic",
    "ETCD_AUTO_COMPACTION_RETENTION=${var.etcd.compaction_retention}",
    "ETCD_QUOTA_BACKEND_BYTES=${var.etcd.quota_bytes}",
    "ETCD_SNAPSHOT_COUNT=10000",
    "",
  ])

  voicemesh_files = [
    { path = "/etc/voicemesh/host.json", permissions = "0644", content = jsonencode(local.host) },
    { path = "/usr/local/bin/voicemesh-prepare", permissions = "0755", content = file("${local.deploy}/voicemesh-prepare") },
  ]
  part_files = var.role == "etcd" ? [] : [
    { path = "/etc/systemd/system/voicemesh@.service", permissions = "0644", content = file("${local.deploy}/voicemesh@.service") },
  ]
  edge_files = var.role != "edge" ? [] : [
    { path = "/etc/nginx/conf.d/voicemesh-whip.conf", permissions = "0644", content = templatefile("${local.deploy}/whip-tls.nginx.conf", { listen = var.edge.whip_listen }) },
    { path = "/etc/systemd/system/nginx.service.d/voicemesh.conf", permissions = "0644", content = file("${local.deploy}/nginx-whip-tls.conf") },
  ]
  etcd_files = var.role != "etcd" ? [] : [
    { path = "/etc/voicemesh/etcd.env", permissions = "0644", content = local.etcd_env },
    { path = "/usr/local/bin/voicemesh-registrar", permissions = "0755", content = file("${local.deploy}/voicemesh-registrar") },
    { path = "/usr/local/bin/voicemesh-etcd", permissions = "0755", content = file("${local.deploy}/voicemesh-etcd") },
    { path = "/etc/systemd/system/etcd.service", permissions = "0644", content = file("${local.deploy}/etcd.service") },
    { path = "/etc/systemd/system/voicemesh-etcd-snapshot.service", permissions = "0644", content = file("${local.deploy}/voicemesh-etcd-snapshot.service") },
    { path = "/etc/systemd/system/voicemesh-etcd-snapshot.timer", permissions = "0644", content = file("${local.deploy}/voicemesh-etcd-snapshot.timer") },
    { path = "/etc/systemd/system/voicemesh-registry-init.service", permissions = "0644", content = file("${local.deploy}/voicemesh-registry-init.service") },
    { path = "/etc/systemd/system/voicemesh-registry-init.timer", permissions = "0644", content = file("${local.deploy}/voicemesh-registry-init.timer") },
  ]

  lifecycle_files = var.lifecycle_hook == null ? [] : [
    { path = "/etc/voicemesh/lifecycle.json", permissions = "0644", content = jsonencode(merge(var.lifecycle_hook, { aws_region = var.common.aws_region })) },
    { path = "/usr/local/bin/voicemesh-lifecycle", permissions = "0755", content = file("${local.deploy}/voicemesh-lifecycle") },
    { path = "/etc/systemd/system/voicemesh-lifecycle.service", permissions = "0644", content = file("${local.deploy}/voicemesh-lifecycle.service") },
    { path = "/etc/systemd/system/voicemesh-lifecycle.timer", permissions = "0644", content = file("${local.deploy}/voicemesh-lifecycle.timer") },
  ]

  otel_files = !local.otel ? [] : [
    { path = "/etc/voicemesh/otel.env", permissions = "0644", content = "OTEL_COLLECTOR_IMAGE=${var.common.otel_collector_image}\nAWS_REGION=${var.common.aws_region}\n" },
    { path = "/etc/voicemesh/otel-collector.yaml", permissions = "0644", content = file("${local.deploy}/otel-collector.yaml") },
    { path = "/etc/systemd/system/otel-collector.service", permissions = "0644", content = file("${local.deploy}/otel-collector.service") },
  ]

  acme_minutes = var.acme == null ? 0 : var.acme.renew_hour * 60 + var.acme.slot * 10
  acme_files = var.acme == null || var.role != "edge" ? [] : [
    { path = "/etc/voicemesh/acme.json", permissions = "0644", content = jsonencode({
      domain     = var.edge.mesh_name, email = var.acme.email, server = var.acme.server, zone_id = var.acme.zone_id,
      tls_secret = var.edge.whip_tls_secret, aws_region = var.common.aws_region, renew_days = var.acme.renew_days,
      lego_image = var.acme.lego_image, secret_region = var.acme.secret_region
    }) },
    { path = "/usr/local/bin/voicemesh-cert-renew", permissions = "0755", content = file("${local.deploy}/voicemesh-cert-renew") },
    { path = "/etc/systemd/system/voicemesh-cert-renew.service", permissions = "0644", content = file("${local.deploy}/voicemesh-cert-renew.service") },
    # This host's slot: daily at renew_hour plus 10 minutes per slot (UTC), so no two edges renew or reload together.
    { path = "/etc/systemd/system/voicemesh-cert-renew.timer", permissions = "0644", content = join("\n", [
      "[Unit]", "Description=voicemesh WHIP certificate renewal at this edge's slot", "",
      "[Timer]", format("OnCalendar=*-*-* %02d:%02d:00 UTC", floor(local.acme_minutes / 60) % 24, local.acme_minutes % 60),
      "Persistent=false", "", "[Install]", "WantedBy=timers.target", ""
    ]) },
  ]

  units = var.role == "etcd" ? ["etcd", "voicemesh-registry-init", "voicemesh-registry-init.timer", "voicemesh-etcd-snapshot.timer"] : concat(
    [for name, part in local.parts : "voicemesh@${name}" if name != "whip-tls"],
    var.role == "edge" ? ["nginx"] : [],
    var.lifecycle_hook == null ? [] : ["voicemesh-lifecycle.timer"],
    local.otel ? ["otel-collector"] : [],
    length(local.acme_files) > 0 ? ["voicemesh-cert-renew.timer"] : [],
  )

  cloud_config = "#cloud-config\n${yamlencode({
    packages    = var.role == "edge" ? ["docker", "nginx"] : ["docker"]
    write_files = concat(local.voicemesh_files, local.part_files, local.edge_files, local.etcd_files, local.lifecycle_files, local.otel_files, local.acme_files)
    runcmd = [
      ["mkdir", "-p", "/var/lib/voicemesh", "/run/voicemesh"],
      ["systemctl", "daemon-reload"],
      ["systemctl", "enable", "--now", "docker"],
      concat(["systemctl", "enable", "--now"], local.units),
    ]
  })}"
}
