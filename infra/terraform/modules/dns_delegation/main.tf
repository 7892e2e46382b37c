# Delegates the mesh zone to the geo DNS servers on the edge PoPs: NS records in the parent
# zone, and glue (A records) for the name servers, which live inside the zone they serve.

resource "aws_route53_record" "delegation" {
  count   = var.parent_zone_id == null ? 0 : 1
  zone_id = var.parent_zone_id
  name    = var.zone
  type    = "NS"
  ttl     = var.ttl
  records = sort(keys(var.name_servers))
}

resource "aws_route53_record" "glue" {
  # checkov:skip=CKV2_AWS_23:glue records point at the edge hosts' Elastic IPs, which live in the edge_pop modules (a record cannot name them here)
  for_each = var.parent_zone_id == null ? {} : var.name_servers
  zone_id  = var.parent_zone_id
  name     = each.key
  type     = "A"
  ttl      = var.ttl
  records  = each.value
}
