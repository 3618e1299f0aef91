variable "name" {
  description = "Prefix for every resource name."
  type        = string
  default     = "spot"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.name))
    error_message = "name: 2-16 characters, lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "environment" {
  description = "Which of the seed's sizes this is: dev, mvp, growth, large or prod-5k (5,000 orders/s)."
  type        = string
  default     = "prod-5k"

  validation {
    condition     = contains(["dev", "mvp", "growth", "large", "prod-5k"], var.environment)
    error_message = "environment must be one of dev, mvp, growth, large, prod-5k."
  }
}

variable "region" {
  description = "AWS region. Prices in infra/prices.csv are for us-east-1."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must look like us-east-1."
  }
}

variable "vpc_cidr" {
  description = "VPC CIDR; a /16 leaves room for one pod IP per VPC address (VPC CNI)."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && endswith(var.vpc_cidr, "/16")
    error_message = "vpc_cidr must be a valid /16 CIDR block."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway instead of one per AZ: cheaper, but an AZ outage cuts egress."
  type        = bool
  default     = false
}

variable "kubernetes_version" {
  description = "EKS control plane version."
  type        = string
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must look like 1.33."
  }
}

variable "cluster_admin_cidrs" {
  description = "CIDRs allowed to reach the EKS API endpoint (kubectl, terraform). Never 0.0.0.0/0."
  type        = list(string)

  validation {
    condition     = alltrue([for c in var.cluster_admin_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "cluster_admin_cidrs must be valid CIDRs and must not include 0.0.0.0/0."
  }
}

# The three node pools. instance_types[0] is the size the pool is planned (and priced) for;
# further types of the same vCPU and memory widen the spot pools a SPOT group can draw on.
variable "system_nodes" {
  description = "Cluster add-ons and the batcher: on-demand, they must not be reclaimed."
  type = object({
    instance_types = list(string)
    count          = number
    capacity_type  = string
  })
  default = {
    instance_types = ["c6i.2xlarge"]
    count          = 4
    capacity_type  = "ON_DEMAND"
  }

  validation {
    condition     = var.system_nodes.capacity_type == "ON_DEMAND" && var.system_nodes.count >= 1
    error_message = "system_nodes must be ON_DEMAND with at least one node."
  }
}

variable "api_nodes" {
  description = "Nodes for the stateless API pods (behind the public load balancer)."
  type = object({
    instance_types = list(string)
    count          = number
    capacity_type  = string
  })
  default = {
    instance_types = ["c6i.xlarge", "c6a.xlarge", "c5.xlarge"]
    count          = 5
    capacity_type  = "SPOT"
  }

  validation {
    condition     = contains(["SPOT", "ON_DEMAND"], var.api_nodes.capacity_type) && var.api_nodes.count >= 1 && length(var.api_nodes.instance_types) >= 1
    error_message = "api_nodes: capacity_type SPOT or ON_DEMAND, count >= 1, at least one instance type."
  }
}

variable "worker_nodes" {
  description = "Nodes for the matching workers (one per shard at full size)."
  type = object({
    instance_types = list(string)
    count          = number
    capacity_type  = string
  })
  default = {
    instance_types = ["c6i.large", "c6a.large", "c5.large"]
    count          = 10
    capacity_type  = "SPOT"
  }

  validation {
    condition     = contains(["SPOT", "ON_DEMAND"], var.worker_nodes.capacity_type) && var.worker_nodes.count >= 1 && length(var.worker_nodes.instance_types) >= 1
    error_message = "worker_nodes: capacity_type SPOT or ON_DEMAND, count >= 1, at least one instance type."
  }
}

variable "node_disk_gb" {
  description = "Root volume per node (gp3, encrypted)."
  type        = number
  default     = 50

  validation {
    condition     = var.node_disk_gb >= 20 && var.node_disk_gb <= 500
    error_message = "node_disk_gb must be between 20 and 500."
  }
}

variable "database" {
  description = "RDS PostgreSQL. reserved = true marks the instance for a reserved-instance purchase (tag + cost estimate)."
  type = object({
    instance_class    = string
    allocated_storage = number
    iops              = number # 0 = the gp3 baseline; above 400 GB the baseline is 12,000
    multi_az          = bool
    reserved          = bool
  })
  default = {
    instance_class    = "db.r6g.2xlarge"
    allocated_storage = 1000
    iops              = 16000
    multi_az          = true
    reserved          = true
  }

  validation {
    condition     = startswith(var.database.instance_class, "db.") && var.database.allocated_storage >= 20
    error_message = "database.instance_class must start with db. and allocated_storage must be >= 20 GB."
  }

  validation {
    # gp3 lets you provision IOPS only from 400 GB up, between 12,000 and 64,000.
    condition     = var.database.iops == 0 || (var.database.allocated_storage >= 400 && var.database.iops >= 12000 && var.database.iops <= 64000)
    error_message = "database.iops: 0 (baseline), or 12000-64000 with allocated_storage >= 400."
  }
}

variable "redis" {
  description = "ElastiCache Redis: one primary (the order path's atomic scripts need one) plus replicas."
  type = object({
    node_type          = string
    replicas           = number
    automatic_failover = bool
    reserved           = bool
  })
  default = {
    node_type          = "cache.r6g.xlarge"
    replicas           = 1
    automatic_failover = true
    reserved           = true
  }

  validation {
    condition     = startswith(var.redis.node_type, "cache.") && var.redis.replicas >= 0 && var.redis.replicas <= 5
    error_message = "redis.node_type must start with cache. and replicas must be 0-5."
  }

  validation {
    condition     = !var.redis.automatic_failover || var.redis.replicas >= 1
    error_message = "redis.automatic_failover needs at least one replica."
  }
}

variable "kafka" {
  description = "Optional MSK cluster (the order path uses Redis Streams). MSK has no c5 brokers; kafka.m5.2xlarge is the nearest to the seed's c5.2xlarge."
  type = object({
    enabled     = bool
    broker_type = string
    brokers     = number
    ebs_gb      = number
  })
  default = {
    enabled     = false
    broker_type = "kafka.m5.2xlarge"
    brokers     = 3
    ebs_gb      = 1000
  }

  validation {
    condition     = startswith(var.kafka.broker_type, "kafka.") && var.kafka.brokers % 3 == 0 && var.kafka.ebs_gb >= 1
    error_message = "kafka.broker_type must start with kafka. and brokers must be a multiple of 3 (one per AZ)."
  }
}

variable "image" {
  description = "Spot image by digest, e.g. <account>.dkr.ecr.us-east-1.amazonaws.com/spot-prod-5k@sha256:<64 hex>. Empty: build the infrastructure (and the registry to push to) without the Spot pods."
  type        = string
  default     = ""

  validation {
    condition     = var.image == "" || can(regex("@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be pinned by digest (...@sha256:<64 hex>) so every pod runs the same build."
  }
}

variable "shards" {
  description = "Matching shards; one worker deployment each (spot worker --shards N)."
  type        = number
  default     = 10

  validation {
    condition     = var.shards >= 1 && var.shards <= 64 && floor(var.shards) == var.shards
    error_message = "shards must be a whole number from 1 to 64."
  }
}

variable "api_replicas" {
  description = "HPA bounds for the API deployment."
  type = object({
    min = number
    max = number
  })
  default = {
    min = 5
    max = 10
  }

  validation {
    condition     = var.api_replicas.min >= 1 && var.api_replicas.max >= var.api_replicas.min
    error_message = "api_replicas: min >= 1 and max >= min."
  }
}

variable "api_resources" {
  description = "CPU/memory request (= limit) of one API pod."
  type        = object({ cpu = string, memory = string })
  default     = { cpu = "1500m", memory = "2Gi" }
}

variable "worker_resources" {
  description = "CPU/memory request (= limit) of one matching worker pod."
  type        = object({ cpu = string, memory = string })
  default     = { cpu = "1500m", memory = "2Gi" }
}

variable "api_port" {
  description = "Port `spot api` listens on inside the pod (SPOT_API_PORT)."
  type        = number
  default     = 8000

  validation {
    condition     = var.api_port >= 1024 && var.api_port <= 65535
    error_message = "api_port must be an unprivileged port (1024-65535)."
  }
}

variable "acm_certificate_arn" {
  description = "ACM certificate for the public HTTPS listener."
  type        = string

  validation {
    condition     = can(regex("^arn:aws:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.acm_certificate_arn))
    error_message = "acm_certificate_arn must be an ACM certificate ARN."
  }
}
