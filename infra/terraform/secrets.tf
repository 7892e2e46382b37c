# The mesh's secrets: Terraform makes the containers (replicated to every region, read by the
# hosts in their own region at start), you put the values (README). No value is in state.

resource "aws_secretsmanager_secret" "token_keys" {
  name        = "${var.name}/token-keys"
  description = "voicemesh routing token keys, \"id:hex,...\" current first (VOICEMESH_TOKEN_KEYS)"

  dynamic "replica" {
    for_each = toset([for r in module.topology.aws_regions : r if r != local.primary_region])
    content {
      region = replica.value
    }
  }
}

resource "aws_secretsmanager_secret" "whip_tls" {
  name        = "${var.name}/whip-tls"
  description = "TLS certificate and key of the WHIP front on the edges: {\"cert\": PEM chain, \"key\": PEM}"

  dynamic "replica" {
    for_each = toset([for r in module.topology.aws_regions : r if r != local.primary_region])
    content {
      region = replica.value
    }
  }
}
