output "hosts" {
  description = "The PoP's hosts by name: public_ip, private_ip, instance_id, health_check_id."
  value = {
    for name, host in aws_instance.host : name => {
      public_ip       = aws_eip.host[name].public_ip
      private_ip      = aws_network_interface.host[name].private_ip
      instance_id     = host.id
      health_check_id = aws_route53_health_check.host[name].id
    }
  }
}

output "public_ingress" {
  description = "What the PoP accepts from the internet: protocol and port by name."
  value       = local.public_ingress
}

output "host_json" {
  description = "Each host's /etc/voicemesh/host.json by host name (host_config): its parts' arguments and settings."
  value       = { for name, config in module.host_config : name => config.host_json }
}
