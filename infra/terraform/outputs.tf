output "mesh_fqdn" {
  description = "The name callers resolve (rtc.<zone>); WHIP endpoint https://<mesh_fqdn>/v1/sessions."
  value       = module.topology.mesh_fqdn
}

output "edges" {
  description = "Edge hosts by PoP and name: public_ip, private_ip, instance_id, health_check_id, and the ICE-TCP address tcp_public_ip, tcp_private_ip with its tcp_health_check_id (\"\" without edge_ice_tcp)."
  value       = local.edges
}

output "registries" {
  description = "Each core region's etcd cluster as a voicemesh registry URL."
  value       = { for name, core in module.topology.cores : name => core.registry }
}

output "delegation_records" {
  description = "The zone's delegation to the geo DNS servers (NS and glue), as zone-file lines."
  value       = module.dns_delegation.records
}

output "secrets" {
  description = "Secrets Manager names to put values in: token_keys (\"id:hex,...\"), api_keys (\"id:secret,...\"), whip_tls ({\"cert\", \"key\"}), registry_ca ({\"cert\", \"key\"})."
  value       = local.mesh.secrets
}

output "alarm_topic" {
  description = "ARN of the SNS topic every alarm notifies (us-east-1)."
  value       = aws_sns_topic.alarms.arn
}
