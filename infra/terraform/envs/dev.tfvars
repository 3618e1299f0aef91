# Development: the whole pipeline on three small nodes. Seed (§9.3): ~$50/month, which
# leaves out EKS ($73 for the control plane alone); see the README for what this costs.
environment        = "dev"
single_nat_gateway = true

system_nodes = { instance_types = ["t3.medium"], count = 1, capacity_type = "ON_DEMAND" }
api_nodes    = { instance_types = ["t3.medium", "t3a.medium"], count = 1, capacity_type = "SPOT" }
worker_nodes = { instance_types = ["t3.medium", "t3a.medium"], count = 1, capacity_type = "SPOT" }
node_disk_gb = 30

database = { instance_class = "db.t4g.micro", allocated_storage = 20, iops = 0, multi_az = false, reserved = false }
redis    = { node_type = "cache.t4g.micro", replicas = 0, automatic_failover = false, reserved = false }

api_replicas     = { min = 1, max = 2 }
api_resources    = { cpu = "250m", memory = "256Mi" }
worker_resources = { cpu = "100m", memory = "128Mi" } # ten shards share one node
