output "records" {
  description = "The delegation as zone-file lines: NS records for the zone and A (glue) records for its name servers."
  value = concat(
    [for ns in sort(keys(var.name_servers)) : "${var.zone}. ${var.ttl} IN NS ${ns}."],
    flatten([for ns, ips in var.name_servers : [for ip in ips : "${ns}. ${var.ttl} IN A ${ip}"]]),
  )
}
