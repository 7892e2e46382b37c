output "core_network" {
  description = "The core network (id, arn) that site VPCs attach to, once its policy is in force."
  value = {
    id  = aws_networkmanager_core_network.mesh.id
    arn = aws_networkmanager_core_network.mesh.arn
  }
  depends_on = [aws_networkmanager_core_network_policy_attachment.mesh]
}
