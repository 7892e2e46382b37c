output "aws_region" {
  description = "The AWS region this instance deploys."
  value       = var.aws_region
}

output "edges" {
  description = "Edge PoPs in this region by id: their hosts (public_ip, private_ip, instance_id, health_check_id, tcp_public_ip, tcp_private_ip, tcp_health_check_id)."
  value       = { for id, pop in module.edge_pop : id => pop.hosts }
}

output "edge_host_json" {
  description = "Each edge host's /etc/voicemesh/host.json in this region, by host name."
  value       = merge([for pop in values(module.edge_pop) : pop.host_json]...)
}

output "edge_whip_nginx_conf" {
  description = "Each edge host's nginx WHIP front in this region, by host name."
  value       = merge([for pop in values(module.edge_pop) : pop.whip_nginx_conf]...)
}

output "cores" {
  description = "Core regions in this region by name: registry, agent, transceiver_asg, transceiver_ports."
  value       = module.core_region
}

output "edge_ingress" {
  description = "What each PoP in this region accepts from the internet: protocol and port by name."
  value       = { for id, pop in module.edge_pop : id => pop.public_ingress }
}

output "endpoints" {
  description = "VPC endpoint service names by site."
  value       = { for site, e in module.endpoints : site => e.services }
}
