output "hosts" {
  description = "The PoP's hosts by name: public_ip, private_ip, instance_id, health_check_id; with ice_tcp, the relay's ICE-TCP address (tcp_public_ip, tcp_private_ip) and its health check (tcp_health_check_id), else \"\"."
  value = {
    for name, host in aws_instance.host : name => {
      public_ip           = aws_eip.host[name].public_ip
      private_ip          = aws_network_interface.host[name].private_ip
      instance_id         = host.id
      health_check_id     = aws_route53_health_check.host[name].id
      tcp_public_ip       = var.ice_tcp ? aws_eip.tcp[name].public_ip : ""
      tcp_private_ip      = var.ice_tcp ? local.tcp_private_ip[name] : ""
      tcp_health_check_id = var.ice_tcp ? aws_route53_health_check.tcp[name].id : ""
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

output "whip_nginx_conf" {
  description = "Each host's nginx WHIP front (/etc/nginx/conf.d/voicemesh-whip.conf, host_config) by host name: it listens on the host's first private IP."
  value       = { for name, config in module.host_config : name => config.files["/etc/nginx/conf.d/voicemesh-whip.conf"] }
}
