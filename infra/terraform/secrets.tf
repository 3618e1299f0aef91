# Secrets are generated here, kept in Secrets Manager (encrypted with the data key) and
# copied into one Kubernetes Secret that the pods read as SPOT_* variables.
# Secrets Manager is the source of truth: change a value there and re-apply.

resource "random_password" "database" {
  length  = 40
  special = false # goes into a URL
}

resource "random_password" "redis" {
  length  = 64
  special = false # ElastiCache AUTH tokens forbid @, " and /
}

resource "random_password" "jwt" {
  length  = 64
  special = false
}

resource "aws_secretsmanager_secret" "database" {
  #checkov:skip=CKV2_AWS_57:rotation needs a rotation Lambda and a rolling restart of every pod (the URL is read at start); rotate by putting a new value and re-applying, see README.
  name                    = "${local.name}/database"
  description             = "PostgreSQL credentials and URL for Spot"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "database" {
  secret_id = aws_secretsmanager_secret.database.id
  secret_string = jsonencode({
    username = aws_db_instance.postgres.username
    password = random_password.database.result
    host     = aws_db_instance.postgres.address
    port     = aws_db_instance.postgres.port
    dbname   = aws_db_instance.postgres.db_name
    url      = "postgresql://${aws_db_instance.postgres.username}:${random_password.database.result}@${aws_db_instance.postgres.address}:${aws_db_instance.postgres.port}/${aws_db_instance.postgres.db_name}?sslmode=require"
  })
}

resource "aws_secretsmanager_secret" "redis" {
  #checkov:skip=CKV2_AWS_57:an ElastiCache AUTH token rotates in two steps (ROTATE, then SET) with a pod restart in between; done by hand with the runbook in the README.
  name                    = "${local.name}/redis"
  description             = "ElastiCache AUTH token and TLS URL for Spot"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "redis" {
  secret_id = aws_secretsmanager_secret.redis.id
  secret_string = jsonencode({
    auth_token = random_password.redis.result
    url        = "rediss://:${random_password.redis.result}@${aws_elasticache_replication_group.redis.primary_endpoint_address}:6379/0"
  })
}

resource "aws_secretsmanager_secret" "jwt" {
  #checkov:skip=CKV2_AWS_57:rotating the JWT secret invalidates every issued token; it is rotated on purpose, not on a timer.
  name                    = "${local.name}/jwt"
  description             = "HMAC secret that signs and verifies Spot API tokens (SPOT_JWT_SECRET)"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "jwt" {
  secret_id     = aws_secretsmanager_secret.jwt.id
  secret_string = random_password.jwt.result
}

# Read back from Secrets Manager, so a value rotated there reaches the pods on the next apply.
data "aws_secretsmanager_secret_version" "database" {
  secret_id  = aws_secretsmanager_secret.database.id
  depends_on = [aws_secretsmanager_secret_version.database]
}

data "aws_secretsmanager_secret_version" "redis" {
  secret_id  = aws_secretsmanager_secret.redis.id
  depends_on = [aws_secretsmanager_secret_version.redis]
}

data "aws_secretsmanager_secret_version" "jwt" {
  secret_id  = aws_secretsmanager_secret.jwt.id
  depends_on = [aws_secretsmanager_secret_version.jwt]
}
