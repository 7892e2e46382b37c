# The mesh in each AWS region of the topology, one call per region (see providers.tf).

module "region_ap_northeast_1" {
  source       = "./modules/region"
  providers    = { aws = aws.ap_northeast_1 }
  aws_region   = "ap-northeast-1"
  mesh         = local.mesh
  core_network = module.backbone.core_network
  name_servers = local.name_servers_spec
}

module "region_ap_south_1" {
  source       = "./modules/region"
  providers    = { aws = aws.ap_south_1 }
  aws_region   = "ap-south-1"
  mesh         = local.mesh
  core_network = module.backbone.core_network
  name_servers = local.name_servers_spec
}

module "region_ap_southeast_1" {
  source       = "./modules/region"
  providers    = { aws = aws.ap_southeast_1 }
  aws_region   = "ap-southeast-1"
  mesh         = local.mesh
  core_network = module.backbone.core_network
  name_servers = local.name_servers_spec
}

module "region_ap_southeast_2" {
  source       = "./modules/region"
  providers    = { aws = aws.ap_southeast_2 }
  aws_region   = "ap-southeast-2"
  mesh         = local.mesh
  core_network = module.backbone.core_network
  name_servers = local.name_servers_spec
}

module "region_eu_central_1" {
  source       = "./modules/region"
  providers    = { aws = aws.eu_central_1 }
  aws_region   = "eu-central-1"
  mesh         = local.mesh
  core_network = module.backbone.core_network
  name_servers = local.name_servers_spec
}

module "region_eu_west_2" {
  source       = "./modules/region"
  providers    = { aws = aws.eu_west_2 }
  aws_region   = "eu-west-2"
  mesh         = local.mesh
  core_network = module.backbone.core_network
  name_servers = local.name_servers_spec
}

module "region_sa_east_1" {
  source       = "./modules/region"
  providers    = { aws = aws.sa_east_1 }
  aws_region   = "sa-east-1"
  mesh         = local.mesh
  core_network = module.backbone.core_network
  name_servers = local.name_servers_spec
}

module "region_us_east_1" {
  source       = "./modules/region"
  providers    = { aws = aws.us_east_1 }
  aws_region   = "us-east-1"
  mesh         = local.mesh
  core_network = module.backbone.core_network
  name_servers = local.name_servers_spec
}

module "region_us_west_1" {
  source       = "./modules/region"
  providers    = { aws = aws.us_west_1 }
  aws_region   = "us-west-1"
  mesh         = local.mesh
  core_network = module.backbone.core_network
  name_servers = local.name_servers_spec
}
