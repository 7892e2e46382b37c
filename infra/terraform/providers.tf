# One provider per AWS region with a site (a module call's provider is fixed, so each region
# has its own block here and in regions.tf; tests/test_terraform.py checks they match the
# topology). The default provider is the primary region: IAM, secrets, backbone, DNS.

provider "aws" {
  region = local.primary_region
  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "ap_northeast_1"
  region = "ap-northeast-1"
  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "ap_south_1"
  region = "ap-south-1"
  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "ap_southeast_1"
  region = "ap-southeast-1"
  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "ap_southeast_2"
  region = "ap-southeast-2"
  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "eu_central_1"
  region = "eu-central-1"
  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "eu_west_2"
  region = "eu-west-2"
  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "sa_east_1"
  region = "sa-east-1"
  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "us_east_1"
  region = "us-east-1"
  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "us_west_1"
  region = "us-west-1"
  default_tags {
    tags = local.tags
  }
}
