# Changes that keep calls and the operations around the mesh, against a mocked AWS: the pinned AMI,
# the transceivers' drain hook and instance refresh, VPC endpoints, alarms and the telemetry sidecar.

mock_provider "aws" {
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "ap_northeast_1"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "ap_south_1"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "ap_southeast_1"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "ap_southeast_2"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "eu_central_1"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "eu_west_2"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "sa_east_1"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "us_east_1"
  source = "./tests/mocks"
}

mock_provider "aws" {
  alias  = "us_west_1"
  source = "./tests/mocks"
}

variables {
  image_repository = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/voicemesh"
  release          = "0.1.0"
  geoip_db_s3_uri  = "s3://voicemesh-geoip/GeoLite2-City.mmdb"
  amis = {
    for region in ["ap-northeast-1", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "eu-central-1", "eu-west-2", "sa-east-1", "us-east-1", "us-west-1"] :
    region => "ami-0123456789abcdef0"
  }
  transceivers = { min = 2, max = 20, workers = 2, capacity = 50, cpu_target = 50, max_session_s = 14400 }
}

run "transceivers_roll_on_the_pinned_ami_and_drain_their_calls" {
  command = plan

  variables {
    amis = merge({
      for region in ["ap-northeast-1", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "eu-central-1", "eu-west-2", "sa-east-1", "us-east-1", "us-west-1"] :
      region => "ami-0123456789abcdef0"
    }, { "us-east-1" = "ami-0fedcba9876543210" })
  }

  assert {
    condition     = module.region_us_east_1.cores["us-east"].rolling.image_id == "ami-0fedcba9876543210" && module.region_eu_central_1.cores["eu-central"].rolling.image_id == "ami-0123456789abcdef0"
    error_message = "Each region's hosts run the AMI pinned for that region, so a new AMI rolls one region at a time."
  }
  assert {
    condition = anytrue([for hook in module.region_us_east_1.cores["us-east"].rolling.hooks :
    hook.lifecycle_transition == "autoscaling:EC2_INSTANCE_TERMINATING" && hook.default_result == "CONTINUE" && hook.heartbeat_timeout == 7200 && hook.name == module.region_us_east_1.cores["us-east"].rolling.drain.hook])
    error_message = "A terminating transceiver host waits in a lifecycle hook that its voicemesh-lifecycle completes once its calls end."
  }
  assert {
    condition     = module.region_us_east_1.cores["us-east"].rolling.drain.max_session_s == 14400
    error_message = "A host drains for up to max_session_s."
  }
  assert {
    condition     = one(module.region_us_east_1.cores["us-east"].rolling.instance_refresh[0].preferences).scale_in_protected_instances == "Refresh" && one(module.region_us_east_1.cores["us-east"].rolling.instance_refresh[0].preferences).max_healthy_percentage == 110
    error_message = "An instance refresh launches a new host before it takes an old one, and takes busy (scale-in protected) hosts through the drain hook too."
  }
  assert {
    condition     = toset(module.region_us_east_1.endpoints["iad"]) == toset(["com.amazonaws.us-east-1.ssm", "com.amazonaws.us-east-1.ssmmessages", "com.amazonaws.us-east-1.ec2messages", "com.amazonaws.us-east-1.secretsmanager", "com.amazonaws.us-east-1.ecr.api", "com.amazonaws.us-east-1.ecr.dkr", "com.amazonaws.us-east-1.s3"])
    error_message = "A core site has interface endpoints for SSM, Secrets Manager and ECR, and the S3 gateway."
  }
}

run "a_region_without_a_pinned_ami_is_refused" {
  command = plan

  variables {
    amis = { "us-east-1" = "ami-0123456789abcdef0" }
  }

  expect_failures = [terraform_data.amis_are_pinned]
}

run "an_ami_id_must_be_one" {
  command = plan

  variables {
    amis = { "us-east-1" = "latest" }
  }

  expect_failures = [var.amis]
}

run "alarms_and_the_acme_validation_zone" {

  variables {
    alarm_emails = ["oncall@example.com"]
    acme         = { zone = "acme-validation.example.net", email = "certs@example.com" }
  }

  assert {
    condition     = length(aws_cloudwatch_metric_alarm.edge_host_unhealthy) == 9 * 2 && length(aws_cloudwatch_metric_alarm.edge_pop_down) == 9
    error_message = "Each edge host and each PoP has an alarm."
  }
  assert {
    condition     = alltrue([for alarm in values(aws_cloudwatch_metric_alarm.edge_host_unhealthy) : alarm.alarm_actions == toset([aws_sns_topic.alarms.arn])])
    error_message = "Every alarm notifies the alarm topic."
  }
  assert {
    condition     = length(aws_sns_topic_subscription.alarm_email) == 1
    error_message = "The alarm topic mails the on-call address."
  }
  assert {
    condition     = aws_route53_zone.acme[0].name == "acme-validation.example.net" && length(aws_iam_role_policy.acme) == 1
    error_message = "ACME creates the validation zone and lets edge hosts write its records and the whip-tls secret."
  }
}
