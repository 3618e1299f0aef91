# Spot on AWS: network, encryption key, container registry. The cluster is in eks.tf,
# the data stores in data.tf, the public entry in alb.tf, the pods in workloads.tf.

# Three named zones, not "whatever the region has": the subnet layout must not shift
# when AWS adds a zone.
data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "zone-name"
    values = [for suffix in ["a", "b", "c"] : "${var.region}${suffix}"]
  }
}

data "aws_caller_identity" "current" {}

locals {
  name = "${var.name}-${var.environment}"
  azs  = slice(data.aws_availability_zones.available.names, 0, 3)

  # /19 private subnets per AZ leave ~8k pod IPs each for the VPC CNI; the rest are /24s.
  private_subnets     = [for i in range(3) : cidrsubnet(var.vpc_cidr, 3, i)]
  public_subnets      = [for i in range(3) : cidrsubnet(var.vpc_cidr, 8, 96 + i)]
  database_subnets    = [for i in range(3) : cidrsubnet(var.vpc_cidr, 8, 100 + i)]
  elasticache_subnets = [for i in range(3) : cidrsubnet(var.vpc_cidr, 8, 104 + i)]

  tags = {
    Project     = "spot"
    Environment = var.environment
    ManagedBy   = "terraform"
  }
}

module "vpc" {
  #checkov:skip=CKV_TF_1:registry module pinned to an exact released version (reviewed on upgrade), not a floating range.
  source  = "terraform-aws-modules/vpc/aws"
  version = "5.21.0"

  name = local.name
  cidr = var.vpc_cidr
  azs  = local.azs

  private_subnets     = local.private_subnets
  public_subnets      = local.public_subnets
  database_subnets    = local.database_subnets
  elasticache_subnets = local.elasticache_subnets

  # Data subnets get no route to the internet at all.
  create_database_subnet_route_table    = true
  create_elasticache_subnet_route_table = true
  create_database_subnet_group          = true
  create_elasticache_subnet_group       = true

  enable_nat_gateway     = true
  single_nat_gateway     = var.single_nat_gateway
  one_nat_gateway_per_az = !var.single_nat_gateway
  enable_dns_hostnames   = true
  enable_dns_support     = true

  # The default security group keeps no rules, so nothing can use it by accident.
  manage_default_security_group  = true
  default_security_group_ingress = []
  default_security_group_egress  = []

  enable_flow_log                                 = true
  create_flow_log_cloudwatch_log_group            = true
  create_flow_log_cloudwatch_iam_role             = true
  flow_log_max_aggregation_interval               = 60
  flow_log_cloudwatch_log_group_retention_in_days = 365
  flow_log_cloudwatch_log_group_kms_key_id        = aws_kms_key.data.arn

  public_subnet_tags  = { "kubernetes.io/role/elb" = "1" }
  private_subnet_tags = { "kubernetes.io/role/internal-elb" = "1" }
}

# One customer-managed key for data at rest: RDS, ElastiCache, MSK, Secrets Manager,
# CloudWatch log groups and ECR. EKS secrets get their own key from the EKS module.
resource "aws_kms_key" "data" {
  description             = "${local.name} data at rest"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_data.json
}

resource "aws_kms_alias" "data" {
  name          = "alias/${local.name}-data"
  target_key_id = aws_kms_key.data.key_id
}

data "aws_iam_policy_document" "kms_data" {
  #checkov:skip=CKV_AWS_109:a key policy's Resource "*" means this key only; the account root statement is the AWS default that lets IAM policies grant use of the key.
  #checkov:skip=CKV_AWS_111:as above: in a key policy "*" is the key itself, not every resource.
  #checkov:skip=CKV_AWS_356:as above: in a key policy "*" is the key itself, not every resource.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  # CloudWatch Logs encrypts the flow-log, RDS and Redis log groups with this key.
  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:aws:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
    }
  }
}

resource "aws_ecr_repository" "spot" {
  name                 = local.name
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.data.arn
  }
}

resource "aws_ecr_lifecycle_policy" "spot" {
  repository = aws_ecr_repository.spot.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the last 50 images"
      selection    = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = 50 }
      action       = { type = "expire" }
    }]
  })
}
