output "registry" {
  description = "The region's etcd cluster as a voicemesh registry URL."
  value       = var.core.registry
}

output "agent" {
  description = "The agent endpoint the region's transceivers use (host:port)."
  value       = local.agent
}

output "transceiver_asg" {
  description = "Name of the transceiver Auto Scaling group."
  value       = aws_autoscaling_group.transceiver.name
}

output "transceiver_ports" {
  description = "Ports a transceiver host accepts from edges: backbone UDP and HTTP, first and last."
  value = {
    backbone_udp = [local.p.backbone_udp, local.last_port.backbone]
    http         = [local.p.transceiver_http, local.last_port.http]
  }
}

output "registry_plan" {
  description = "What the registrar makes: etcd users and node certificates (nodes, servers) and how it enrolls transceiver hosts."
  value       = local.registry_plan
}

output "transceiver_host_json" {
  description = "A transceiver host's /etc/voicemesh/host.json (host_config): its workers' arguments and settings."
  value       = module.transceiver_config.host_json
}

output "backbone_ingress" {
  description = "The networks (every site's vpc_cidr) the region's etcd accepts clients from and its transceivers accept backbone frames and offers from."
  value = {
    etcd_client = sort([for rule in aws_vpc_security_group_ingress_rule.etcd_client : "${rule.cidr_ipv4}:${rule.from_port}"])
    transceiver = sort([for rule in aws_vpc_security_group_ingress_rule.transceiver : "${rule.ip_protocol} ${rule.cidr_ipv4}:${rule.from_port}-${rule.to_port}"])
  }
}

output "rolling" {
  description = "How the transceiver group changes without dropping calls: image_id (the pinned AMI of its launch template), the lifecycle hooks, the instance refresh and the drain settings each host's voicemesh-lifecycle gets."
  value = {
    image_id         = aws_launch_template.transceiver.image_id
    hooks            = aws_autoscaling_group.transceiver.initial_lifecycle_hook
    instance_refresh = aws_autoscaling_group.transceiver.instance_refresh
    drain            = { asg = local.transceiver_asg, hook = local.drain_hook, max_session_s = var.transceivers.max_session_s }
  }
}
