# Who may talk to whom. Only the public load balancer accepts traffic from the internet;
# every data store accepts its one port from the cluster's nodes and nothing else.

locals {
  # The API Service's fixed NodePort: the ALB targets it on the API nodes.
  api_node_port = 30080
}

resource "aws_security_group" "alb" {
  name        = "${local.name}-alb"
  description = "Public HTTPS entry to the Spot API"
  vpc_id      = module.vpc.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from clients anywhere (the only world-open port)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "alb_to_api" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the API NodePort on the cluster nodes"
  ip_protocol                  = "tcp"
  from_port                    = local.api_node_port
  to_port                      = local.api_node_port
  referenced_security_group_id = module.eks.node_security_group_id
}

resource "aws_security_group" "postgres" {
  name        = "${local.name}-postgres"
  description = "PostgreSQL, from the cluster nodes only"
  vpc_id      = module.vpc.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "postgres_from_nodes" {
  security_group_id            = aws_security_group.postgres.id
  description                  = "PostgreSQL from the cluster nodes"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = module.eks.node_security_group_id
}

resource "aws_security_group" "redis" {
  name        = "${local.name}-redis"
  description = "Redis (TLS), from the cluster nodes only"
  vpc_id      = module.vpc.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_nodes" {
  security_group_id            = aws_security_group.redis.id
  description                  = "Redis TLS from the cluster nodes"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = module.eks.node_security_group_id
}

resource "aws_security_group" "kafka" {
  count       = var.kafka.enabled ? 1 : 0
  name        = "${local.name}-kafka"
  description = "MSK brokers (TLS + IAM), from the cluster nodes only"
  vpc_id      = module.vpc.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "kafka_from_nodes" {
  count                        = var.kafka.enabled ? 1 : 0
  security_group_id            = aws_security_group.kafka[0].id
  description                  = "Kafka SASL/IAM over TLS from the cluster nodes"
  ip_protocol                  = "tcp"
  from_port                    = 9098
  to_port                      = 9098
  referenced_security_group_id = module.eks.node_security_group_id
}
