# Alarms: every edge host's Route 53 health check (edge_pop) feeds a CloudWatch alarm, and every
# alarm notifies one SNS topic. Route 53 publishes health check metrics in us-east-1 only, so the
# alarms and the topic live there. infra/README.md has a runbook section per alarm.

resource "aws_sns_topic" "alarms" {
  provider          = aws.us_east_1
  name              = "${var.name}-alarms"
  kms_master_key_id = "alias/aws/sns"
}

resource "aws_sns_topic_subscription" "alarm_email" {
  provider  = aws.us_east_1
  for_each  = toset(var.alarm_emails)
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

locals {
  edge_hosts = merge([for pop, hosts in local.edges : { for name, host in hosts : name => merge(host, { pop = pop }) }]...)
}

# Runbook: infra/README.md, "Alarm: edge host unhealthy".
resource "aws_cloudwatch_metric_alarm" "edge_host_unhealthy" {
  provider            = aws.us_east_1
  for_each            = local.edge_hosts
  alarm_name          = "${var.name}-edge-host-unhealthy-${each.key}"
  alarm_description   = "Edge host ${each.key} (PoP ${each.value.pop}) fails its Route 53 health check: the geo DNS no longer names it. Runbook: infra/README.md, Alarm: edge host unhealthy."
  namespace           = "AWS/Route53"
  metric_name         = "HealthCheckStatus"
  dimensions          = { HealthCheckId = each.value.health_check_id }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

# Runbook: infra/README.md, "Alarm: edge host ICE-TCP unreachable".
resource "aws_cloudwatch_metric_alarm" "edge_ice_tcp_unreachable" {
  provider            = aws.us_east_1
  for_each            = var.edge_ice_tcp ? local.edge_hosts : {}
  alarm_name          = "${var.name}-edge-ice-tcp-unreachable-${each.key}"
  alarm_description   = "Edge host ${each.key} (PoP ${each.value.pop}) takes no TCP connection on its ICE-TCP address ${each.value.tcp_public_ip}: callers whose networks drop UDP cannot connect through it. Runbook: infra/README.md, Alarm: edge host ICE-TCP unreachable."
  namespace           = "AWS/Route53"
  metric_name         = "HealthCheckStatus"
  dimensions          = { HealthCheckId = each.value.tcp_health_check_id }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

# Runbook: infra/README.md, "Alarm: edge PoP down".
resource "aws_cloudwatch_metric_alarm" "edge_pop_down" {
  provider            = aws.us_east_1
  for_each            = local.edges
  alarm_name          = "${var.name}-edge-pop-down-${each.key}"
  alarm_description   = "Every host of edge PoP ${each.key} fails its health check: its callers go to the next nearest PoP. Runbook: infra/README.md, Alarm: edge PoP down."
  evaluation_periods  = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]

  # Healthy hosts of the PoP: the sum of each host's HealthCheckStatus (1 healthy, 0 not).
  metric_query {
    id          = "healthy"
    expression  = join(" + ", [for i, _ in keys(each.value) : "h${i}"])
    label       = "healthy hosts"
    return_data = true
  }
  dynamic "metric_query" {
    for_each = values(each.value)
    content {
      id = "h${metric_query.key}"
      metric {
        namespace   = "AWS/Route53"
        metric_name = "HealthCheckStatus"
        dimensions  = { HealthCheckId = metric_query.value.health_check_id }
        stat        = "Minimum"
        period      = 60
      }
    }
  }
}
