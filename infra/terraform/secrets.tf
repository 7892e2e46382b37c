# The mesh's secrets: Terraform makes the containers (replicated to every region, read by the
# hosts in their own region at start), you put the values (infra/README.md). No value is in state.
#
# Certificates are not here: the registrar on each core region's etcd hosts issues them from the
# CA in registry-ca into per-host node secrets (modules/edge_pop, modules/core_region,
# deploy/voicemesh-registrar).

locals {
  replicas = toset([for r in module.topology.aws_regions : r if r != local.primary_region])
}

resource "aws_secretsmanager_secret" "token_keys" {
  # checkov:skip=CKV2_AWS_57:rotation needs a rolling restart of the parts, which a rotation Lambda cannot do: rotated by the runbook (infra/README.md, Rotating keys and certificates)
  # checkov:skip=CKV_AWS_149:encrypted with the AWS managed key aws/secretsmanager; who reads it is limited by the instance roles (iam.tf), which a customer key would only repeat, in every replica region
  name        = "${var.name}/token-keys"
  description = "voicemesh mesh keys, \"id:hex,...\" current first (VOICEMESH_TOKEN_KEYS): routing tokens, client tokens and edge-to-transceiver hop signatures derive from them"

  dynamic "replica" {
    for_each = local.replicas
    content {
      region = replica.value
    }
  }
}

resource "aws_secretsmanager_secret" "api_keys" {
  # checkov:skip=CKV2_AWS_57:rotation needs a rolling restart of the parts, which a rotation Lambda cannot do: rotated by the runbook (infra/README.md, Rotating keys and certificates)
  # checkov:skip=CKV_AWS_149:encrypted with the AWS managed key aws/secretsmanager; who reads it is limited by the instance roles (iam.tf), which a customer key would only repeat, in every replica region
  name        = "${var.name}/api-keys"
  description = "voicemesh API keys of app backends, \"id:secret,...\" (VOICEMESH_API_KEYS on the edges)"

  dynamic "replica" {
    for_each = local.replicas
    content {
      region = replica.value
    }
  }
}

resource "aws_secretsmanager_secret" "whip_tls" {
  # checkov:skip=CKV2_AWS_57:rotation needs a rolling restart of the parts, which a rotation Lambda cannot do: rotated by the runbook (infra/README.md, Rotating keys and certificates)
  # checkov:skip=CKV_AWS_149:encrypted with the AWS managed key aws/secretsmanager; who reads it is limited by the instance roles (iam.tf), which a customer key would only repeat, in every replica region
  name        = "${var.name}/whip-tls"
  description = "TLS certificate and key of the WHIP front on the edges: {\"cert\": PEM chain, \"key\": PEM}"

  dynamic "replica" {
    for_each = local.replicas
    content {
      region = replica.value
    }
  }
}

resource "aws_secretsmanager_secret" "registry_ca" {
  # checkov:skip=CKV2_AWS_57:rotation needs a rolling restart of the parts, which a rotation Lambda cannot do: rotated by the runbook (infra/README.md, Rotating keys and certificates)
  # checkov:skip=CKV_AWS_149:encrypted with the AWS managed key aws/secretsmanager; who reads it is limited by the instance roles (iam.tf), which a customer key would only repeat, in every replica region
  name        = "${var.name}/registry-ca"
  description = "voicemesh mesh CA, {\"cert\": PEM, \"key\": PEM}: read only by the etcd hosts, which issue every etcd, node and agent certificate from it"

  dynamic "replica" {
    for_each = toset([for c in values(module.topology.cores) : c.aws_region if c.aws_region != local.primary_region])
    content {
      region = replica.value
    }
  }
}
