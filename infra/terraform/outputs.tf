output "api_url" {
  description = "Public HTTPS endpoint of the API (point your DNS name at it)."
  value       = "https://${aws_lb.api.dns_name}"
}

output "cluster_name" {
  description = "EKS cluster: aws eks update-kubeconfig --name <this>."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "EKS API server endpoint."
  value       = module.eks.cluster_endpoint
}

output "ecr_repository_url" {
  description = "Push the image here; deploy it by digest (var.image)."
  value       = aws_ecr_repository.spot.repository_url
}

output "postgres_endpoint" {
  description = "RDS PostgreSQL host:port (private)."
  value       = aws_db_instance.postgres.endpoint
}

output "redis_primary_endpoint" {
  description = "ElastiCache primary endpoint (TLS, private); the order path writes here."
  value       = aws_elasticache_replication_group.redis.primary_endpoint_address
}

output "redis_reader_endpoint" {
  description = "ElastiCache reader endpoint for read-only traffic (depth, market data)."
  value       = aws_elasticache_replication_group.redis.reader_endpoint_address
}

output "kafka_bootstrap_brokers" {
  description = "MSK bootstrap brokers (SASL/IAM over TLS), empty when Kafka is off."
  value       = var.kafka.enabled ? aws_msk_cluster.kafka[0].bootstrap_brokers_sasl_iam : ""
}

output "secret_arns" {
  description = "Secrets Manager ARNs of the database, Redis and JWT secrets."
  value = {
    database = aws_secretsmanager_secret.database.arn
    redis    = aws_secretsmanager_secret.redis.arn
    jwt      = aws_secretsmanager_secret.jwt.arn
  }
}
