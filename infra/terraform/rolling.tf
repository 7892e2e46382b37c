# Rolling changes that keep calls (infra/README.md, "Rolling changes"): every host runs the AMI
# pinned for its region in var.amis, so a new AMI is an edit of one region's entry, applied and
# watched before the next region's. The plan stops if a region with a site has none.
locals {
  # Regions of the topology that regions.tf deploys (topology_is_deployed checks the rest).
  deployed_regions = setintersection(module.topology.aws_regions, [for r in local.regions : r.aws_region])
}

resource "terraform_data" "amis_are_pinned" {
  lifecycle {
    precondition {
      condition     = length(setsubtract(local.deployed_regions, keys(var.amis))) == 0
      error_message = "var.amis needs a pinned AMI for every AWS region of the topology: ${join(", ", sort(setsubtract(local.deployed_regions, keys(var.amis))))} have none."
    }
  }
}
