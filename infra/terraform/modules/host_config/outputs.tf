output "host_json" {
  description = "The host's /etc/voicemesh/host.json: its parts, their arguments and settings (placeholders for this host's addresses), secret names; no secret values."
  value       = jsonencode(local.host)
}

output "units" {
  description = "The systemd units the host enables."
  value       = local.units
}

output "cloud_config" {
  description = "The cloud-config document (plain text)."
  value       = local.cloud_config
}

output "user_data_base64" {
  description = "The cloud-config, gzip'd and base64-encoded, for user_data_base64 (cloud-init unpacks gzip)."
  value       = base64gzip(local.cloud_config)
}

output "transceiver_users" {
  description = "The etcd users (= certificate CNs) of a transceiver host's workers, with {instance_id} for the host's instance id; empty for other roles."
  value       = local.trx_users
}

output "files" {
  description = "The files the cloud-config writes, by path: content."
  value       = { for f in concat(local.voicemesh_files, local.part_files, local.edge_files, local.etcd_files, local.lifecycle_files, local.otel_files, local.acme_files) : f.path => f.content }
}
