# Values the AWS provider would return, for terraform test without an AWS account.

mock_data "aws_availability_zones" {
  defaults = { names = ["zone-a", "zone-b", "zone-c"] }
}

mock_data "aws_caller_identity" {
  defaults = { account_id = "123456789012" }
}

mock_data "aws_partition" {
  defaults = { partition = "aws" }
}

mock_data "aws_networkmanager_core_network_policy_document" {
  defaults = { json = "{\"version\":\"2021.12\"}" }
}

mock_data "aws_ssm_parameter" {
  defaults = { insecure_value = "ami-0123456789abcdef0" }
}

# A hosted zone's ARN names its id, as in AWS (the ACME policy grants the validation zone by ARN,
# voicemesh-cert-renew's lego writes to it by id).
mock_resource "aws_route53_zone" {
  defaults = { zone_id = "Z0ACMEVALIDATION", arn = "arn:aws:route53:::hostedzone/Z0ACMEVALIDATION" }
}

# An edge host's interface: its primary private IP and, with ICE-TCP, a secondary (private_ips holds both).
mock_resource "aws_network_interface" {
  defaults = { private_ip = "10.0.0.10", private_ips = ["10.0.0.10", "10.0.0.20"] }
}

mock_resource "aws_eip" {
  defaults = { public_ip = "198.51.100.7" }
}

mock_resource "aws_lb" {
  defaults = {
    arn      = "arn:aws:elasticloadbalancing:eu-central-1:123456789012:loadbalancer/net/agents/0123456789abcdef"
    dns_name = "agents.elb.amazonaws.com"
  }
}

mock_resource "aws_lb_target_group" {
  defaults = { arn = "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/agents/0123456789abcdef" }
}

mock_resource "aws_launch_template" {
  defaults = { id = "lt-0123456789abcdef0", latest_version = 1 }
}

mock_resource "aws_networkmanager_core_network" {
  defaults = {
    id  = "core-network-0123456789abcdef0"
    arn = "arn:aws:networkmanager::123456789012:core-network/core-network-0123456789abcdef0"
  }
}

mock_resource "aws_iam_role" {
  defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
}

mock_resource "aws_vpc" {
  defaults = { arn = "arn:aws:ec2:eu-central-1:123456789012:vpc/vpc-0123456789abcdef0" }
}

mock_resource "aws_subnet" {
  defaults = { arn = "arn:aws:ec2:eu-central-1:123456789012:subnet/subnet-0123456789abcdef0" }
}

mock_resource "aws_ssm_document" {
  defaults = { arn = "arn:aws:ssm:eu-central-1:123456789012:document/voicemesh-registrar" }
}

mock_resource "aws_instance" {
  defaults = { arn = "arn:aws:ec2:eu-central-1:123456789012:instance/i-0123456789abcdef0" }
}

mock_resource "aws_sns_topic" {
  defaults = { arn = "arn:aws:sns:us-east-1:123456789012:voicemesh-alarms" }
}
