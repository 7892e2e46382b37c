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
  }
}

data "aws_iam_policy_document" "acme" {
  count = var.acme == null ? 0 : 1
  statement {
    actions   = ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets"]
    resources = [aws_route53_zone.acme[0].arn]
  }
  statement {
    actions   = ["route53:GetChange"]
    resources = ["${local.arn}:route53:::change/*"]
  }
  statement {
    actions   = ["route53:ListHostedZonesByName"]
    resources = ["*"]
  }
  statement {
    actions   = ["secretsmanager:PutSecretValue"]
    resources = ["${local.secret}/whip-tls-??????"]
  }
}

resource "aws_iam_role_policy" "acme" {
  count  = var.acme == null ? 0 : 1
  name   = "acme-renewal"
  role   = aws_iam_role.host["edge"].name
  policy = data.aws_iam_policy_document.acme[0].json
}

output "acme_zone_name_servers" {
  description = "Name servers of the ACME validation zone, to delegate it from its parent; null without ACME."
  value       = var.acme == null ? null : aws_route53_zone.acme[0].name_servers
}
