locals {
  # Root volumes: encrypted gp3 with the account's EBS key. (A customer key would also need
  # a grant for the Auto Scaling service-linked role, or spot replacements fail to launch.)
  node_disk = {
    xvda = {
      device_name = "/dev/xvda"
      ebs = {
        volume_size           = var.node_disk_gb
        volume_type           = "gp3"
        encrypted             = true
        delete_on_termination = true
      }
    }
  }
}

module "eks" {
  #checkov:skip=CKV_TF_1:registry module pinned to an exact released version (reviewed on upgrade), not a floating range.
  source  = "terraform-aws-modules/eks/aws"
  version = "20.37.2"

  cluster_name    = local.name
  cluster_version = var.kubernetes_version

  vpc_id                   = module.vpc.vpc_id
  subnet_ids               = module.vpc.private_subnets
  control_plane_subnet_ids = module.vpc.private_subnets

  cluster_endpoint_private_access      = true
  cluster_endpoint_public_access       = true
  cluster_endpoint_public_access_cidrs = var.cluster_admin_cidrs

  enable_cluster_creator_admin_permissions = true

  # Kubernetes Secrets are envelope-encrypted with a key the module creates and rotates.
  cluster_encryption_config              = { resources = ["secrets"] }
  cluster_enabled_log_types              = ["api", "audit", "authenticator"]
  cloudwatch_log_group_retention_in_days = 365
  cloudwatch_log_group_kms_key_id        = aws_kms_key.data.arn

  cluster_addons = {
    coredns                = {}
    kube-proxy             = {}
    vpc-cni                = { before_compute = true }
    eks-pod-identity-agent = {}
  }

  # Only the public load balancer reaches the API pods' NodePort on the API nodes.
  node_security_group_additional_rules = {
    alb_to_api = {
      description              = "Public ALB to the API NodePort"
      type                     = "ingress"
      protocol                 = "tcp"
      from_port                = local.api_node_port
      to_port                  = local.api_node_port
      source_security_group_id = aws_security_group.alb.id
    }
  }

  eks_managed_node_group_defaults = {
    ami_type              = "AL2023_x86_64_STANDARD"
    block_device_mappings = local.node_disk
  }

  eks_managed_node_groups = {
    # Add-ons (CoreDNS, ...) and the batcher. On-demand: the batcher is the single writer
    # to PostgreSQL and should not be restarted by a capacity reclaim.
    system = {
      instance_types = var.system_nodes.instance_types
      capacity_type  = var.system_nodes.capacity_type
      min_size       = var.system_nodes.count
      max_size       = var.system_nodes.count
      desired_size   = var.system_nodes.count
      labels         = { "spot.role" = "system" }
    }

    # Stateless API pods behind the ALB. On a spot reclaim, EKS drains the node on the
    # rebalance recommendation; the ALB deregisters it and the other API nodes carry on.
    api = {
      instance_types = var.api_nodes.instance_types
      capacity_type  = var.api_nodes.capacity_type
      min_size       = var.api_nodes.count
      max_size       = var.api_nodes.count * 2
      desired_size   = var.api_nodes.count
      labels         = { "spot.role" = "api" }
      taints         = { role = { key = "spot.role", value = "api", effect = "NO_SCHEDULE" } }
    }

    # Matching workers, one pod per shard. Spot is safe here because a worker keeps no state
    # that is not in Redis: when this node is reclaimed, the worker's pod restarts on another
    # node, loads its shard's last book snapshot from Redis and replays its stream
    # orders:{shard} from the snapshot's stream id onward, so no queued order is lost or
    # applied twice. The cost is a pause of that shard's matching (not of order intake:
    # the API keeps queueing into the stream) for the restart plus the replay.
    worker = {
      instance_types = var.worker_nodes.instance_types
      capacity_type  = var.worker_nodes.capacity_type
      min_size       = var.worker_nodes.count
      max_size       = var.worker_nodes.count + 2
      desired_size   = var.worker_nodes.count
      labels         = { "spot.role" = "worker" }
      taints         = { role = { key = "spot.role", value = "worker", effect = "NO_SCHEDULE" } }
    }
  }
}
