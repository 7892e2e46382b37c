# The WHIP certificate by ACME DNS-01 (infra/README.md, "Certificates"): a Route 53 zone the edges'
# lego writes challenge TXT records to, which the geo DNS servers point _acme-challenge.<mesh name>
# at by CNAME. Delegate it from its parent (output acme_zone_name_servers) before the first renewal.

resource "aws_route53_zone" "acme" {
  # checkov:skip=CKV2_AWS_38:the mesh zone that CNAMEs into it is served unsigned by the geo DNS servers, so signing this zone adds no chain of trust
  # checkov:skip=CKV2_AWS_39:it holds only challenge TXT records for minutes; query logs would record the CA's lookups and nothing else
  count         = var.acme == null ? 0 : 1
  name          = var.acme.zone
  comment       = "ACME DNS-01 validation records for ${module.topology.mesh_fqdn}"
  force_destroy = true
}

locals {
  acme = var.acme == null ? null : {
    zone       = var.acme.zone
    zone_id    = aws_route53_zone.acme[0].zone_id
    email      = var.acme.email
    server     = var.acme.server
    renew_days = var.acme.renew_days
    renew_hour = var.acme.renew_hour
    lego_image = var.acme.lego_image
    # whip-tls takes writes only in its primary region (secrets.tf); the edges read their own region's replica.
    secret_region = local.primary_region
  }
}

# What voicemesh-cert-renew calls (jsonencode'd, so tests/test_infra_checks.py checks it): lego's
# route53 provider, given the zone's id (AWS_HOSTED_ZONE_ID), lists and changes the validation zone's
# records and polls its change; the renewed certificate goes into whip-tls in its primary region (a
# replica takes no writes). Reading whip-tls is the edges' start-up read (iam.tf).
locals {
  acme_policy = var.acme == null ? null : jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets"], Resource = aws_route53_zone.acme[0].arn },
      { Effect = "Allow", Action = "route53:GetChange", Resource = "${local.arn}:route53:::change/*" },
      { Effect = "Allow", Action = "secretsmanager:PutSecretValue", Resource = "${local.arn}:secretsmanager:${local.primary_region}:${local.account}:secret:${var.name}/whip-tls-??????" },
    ]
  })
}

resource "aws_iam_role_policy" "acme" {
  count  = var.acme == null ? 0 : 1
  name   = "acme-renewal"
  role   = aws_iam_role.host["edge"].name
  policy = local.acme_policy
}

output "acme_zone_name_servers" {
  description = "Name servers of the ACME validation zone, to delegate it from its parent; null without ACME."
  value       = var.acme == null ? null : aws_route53_zone.acme[0].name_servers
}
