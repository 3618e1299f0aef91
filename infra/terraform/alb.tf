# The public entry: HTTPS on an Application Load Balancer in the public subnets, forwarding
# to the API Service's NodePort on the API node group. No load-balancer controller needed.

resource "aws_lb" "api" {
  #checkov:skip=CKV2_AWS_28:WAF bills per request: 5,000 req/s is ~13 billion requests a month, ~$7,900 at $0.60 per million, more than the rest of the stack. The API authenticates every order (JWT), validates and rate-limits (429) itself; add WAF for a DDoS-prone launch.
  name                       = local.name
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = module.vpc.public_subnets
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true

  access_logs {
    bucket  = aws_s3_bucket.alb_logs.id
    enabled = true
  }

  depends_on = [aws_s3_bucket_policy.alb_logs]
}

resource "aws_lb_target_group" "api" {
  name     = "${local.name}-api"
  port     = local.api_node_port
  protocol = "HTTP"
  vpc_id   = module.vpc.vpc_id

  # Short drain: API requests are quick, and a reclaimed spot node has two minutes.
  deregistration_delay = 30

  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.api.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.acm_certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
}

# A managed node group has exactly one Auto Scaling group; nodes it adds (including spot
# replacements) register with the target group by themselves.
resource "aws_autoscaling_attachment" "api" {
  #checkov:skip=CKV2_AWS_15:the Auto Scaling group belongs to the EKS managed node group; an unready API pod must not make EC2 replace its node. Pod health is Kubernetes' job (probes), node health EKS'.
  autoscaling_group_name = one(module.eks.eks_managed_node_groups["api"].node_group_autoscaling_group_names)
  lb_target_group_arn    = aws_lb_target_group.api.arn
}

data "aws_elb_service_account" "current" {}

resource "aws_s3_bucket" "alb_logs" {
  #checkov:skip=CKV_AWS_18:this is the access-log bucket; logging it to another bucket only moves the question.
  #checkov:skip=CKV_AWS_144:access logs are diagnostics, not data of record; a cross-region copy is not worth its cost.
  #checkov:skip=CKV_AWS_145:ALB access logs can only be delivered to SSE-S3 (AES256) buckets, not SSE-KMS.
  #checkov:skip=CKV2_AWS_62:nothing consumes events from the log bucket.
  bucket_prefix = "${local.name}-alb-logs-"
}

resource "aws_s3_bucket_public_access_block" "alb_logs" {
  bucket                  = aws_s3_bucket.alb_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

# ALB access logs can only be written with S3-managed keys (SSE-S3), not with KMS.
resource "aws_s3_bucket_server_side_encryption_configuration" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id
  rule {
    id     = "expire"
    status = "Enabled"
    filter {}
    expiration {
      days = 365
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

data "aws_iam_policy_document" "alb_logs" {
  statement {
    sid       = "AlbWritesAccessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.alb_logs.arn}/AWSLogs/${data.aws_caller_identity.current.account_id}/*"]

    principals {
      type        = "AWS"
      identifiers = [data.aws_elb_service_account.current.arn]
    }
  }

  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.alb_logs.arn, "${aws_s3_bucket.alb_logs.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "alb_logs" {
  bucket = aws_s3_bucket.alb_logs.id
  policy = data.aws_iam_policy_document.alb_logs.json
}
