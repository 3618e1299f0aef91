# The data stores: PostgreSQL (RDS), Redis (ElastiCache), optional Kafka (MSK).
# All encrypted at rest with the data key and reachable only over TLS.

resource "aws_db_parameter_group" "postgres" {
  name   = "${local.name}-postgres16"
  family = "postgres16"

  # Clients must use TLS (sslmode=require in SPOT_DATABASE_URL).
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  # Schema changes and slow statements only: logging every batch at 5,000 orders/s would
  # cost more than it tells.
  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "500"
  }
}

resource "aws_db_instance" "postgres" {
  identifier     = local.name
  engine         = "postgres"
  engine_version = "16"
  instance_class = var.database.instance_class
  db_name        = "spot"
  username       = "spot"
  password       = random_password.database.result
  port           = 5432

  allocated_storage     = var.database.allocated_storage
  max_allocated_storage = var.database.allocated_storage * 2
  storage_type          = "gp3"
  # Provisioned IOPS for the batcher's COPY bursts; 0 keeps gp3's baseline.
  iops              = var.database.iops > 0 ? var.database.iops : null
  storage_encrypted = true
  kms_key_id        = aws_kms_key.data.arn

  multi_az               = var.database.multi_az
  db_subnet_group_name   = module.vpc.database_subnet_group_name
  vpc_security_group_ids = [aws_security_group.postgres.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.postgres.name

  iam_database_authentication_enabled = true
  auto_minor_version_upgrade          = true
  backup_retention_period             = 14
  copy_tags_to_snapshot               = true
  deletion_protection                 = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${local.name}-final"
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]

  performance_insights_enabled    = true
  performance_insights_kms_key_id = aws_kms_key.data.arn
  monitoring_interval             = 60
  monitoring_role_arn             = aws_iam_role.rds_monitoring.arn

  # The size is meant to be covered by a reserved instance; the tag lets billing check it.
  tags = { PurchaseOption = var.database.reserved ? "reserved" : "on-demand" }
}

resource "aws_iam_role" "rds_monitoring" {
  name = "${local.name}-rds-monitoring"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
    }]
  })
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_elasticache_parameter_group" "redis" {
  name   = "${local.name}-redis7"
  family = "redis7"

  # Streams, balances and routes are the system of record until the batcher has
  # persisted them: Redis must refuse writes when full, never evict.
  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }
}

resource "aws_cloudwatch_log_group" "redis_slow" {
  name              = "/spot/${local.name}/redis/slow-log"
  retention_in_days = 365
  kms_key_id        = aws_kms_key.data.arn
}

# One primary: the order path's Lua scripts (idempotency, balance hold, route lookup and
# XADD in one step) need every key of a symbol on the same node. Replicas are for failover.
resource "aws_elasticache_replication_group" "redis" {
  replication_group_id = local.name
  description          = "Spot order streams, balances and routes"
  engine               = "redis"
  engine_version       = "7.1"
  node_type            = var.redis.node_type
  port                 = 6379
  parameter_group_name = aws_elasticache_parameter_group.redis.name

  num_cache_clusters         = 1 + var.redis.replicas
  automatic_failover_enabled = var.redis.automatic_failover
  multi_az_enabled           = var.redis.automatic_failover

  subnet_group_name  = module.vpc.elasticache_subnet_group_name
  security_group_ids = [aws_security_group.redis.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.data.arn
  transit_encryption_enabled = true
  auth_token                 = random_password.redis.result

  auto_minor_version_upgrade = true
  snapshot_retention_limit   = 7
  apply_immediately          = false

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.redis_slow.name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }

  tags = { PurchaseOption = var.redis.reserved ? "reserved" : "on-demand" }
}

resource "aws_cloudwatch_log_group" "kafka" {
  count             = var.kafka.enabled ? 1 : 0
  name              = "/spot/${local.name}/msk"
  retention_in_days = 365
  kms_key_id        = aws_kms_key.data.arn
}

resource "aws_msk_cluster" "kafka" {
  count                  = var.kafka.enabled ? 1 : 0
  cluster_name           = local.name
  kafka_version          = "3.6.0"
  number_of_broker_nodes = var.kafka.brokers
  enhanced_monitoring    = "PER_BROKER"

  broker_node_group_info {
    instance_type   = var.kafka.broker_type
    client_subnets  = module.vpc.database_subnets
    security_groups = [aws_security_group.kafka[0].id]

    storage_info {
      ebs_storage_info {
        volume_size = var.kafka.ebs_gb
      }
    }

    connectivity_info {
      public_access {
        type = "DISABLED"
      }
    }
  }

  client_authentication {
    unauthenticated = false
    sasl {
      iam = true
    }
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = aws_kms_key.data.arn
    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.kafka[0].name
      }
    }
  }
}
