# The private backbone between sites: one AWS Cloud WAN core network with an edge in every
# region, one segment ("mesh") that every site VPC joins without approval, routes shared.

resource "aws_networkmanager_global_network" "mesh" {
  description = "${var.name} backbone"
  tags        = { Name = var.name }
}

resource "aws_networkmanager_core_network" "mesh" {
  global_network_id = aws_networkmanager_global_network.mesh.id
  description       = "${var.name} backbone"
  tags              = { Name = var.name }
}

data "aws_networkmanager_core_network_policy_document" "mesh" {
  core_network_configuration {
    asn_ranges = [var.asn_range]
    dynamic "edge_locations" {
      for_each = var.aws_regions
      content {
        location = edge_locations.value
      }
    }
  }

  segments {
    name                          = "mesh"
    description                   = "every voicemesh site"
    require_attachment_acceptance = false
    isolate_attachments           = false
  }

  attachment_policies {
    rule_number     = 100
    condition_logic = "or"
    conditions {
      type = "any"
    }
    action {
      association_method = "constant"
      segment            = "mesh"
    }
  }
}

resource "aws_networkmanager_core_network_policy_attachment" "mesh" {
  core_network_id = aws_networkmanager_core_network.mesh.id
  policy_document = data.aws_networkmanager_core_network_policy_document.mesh.json
}
