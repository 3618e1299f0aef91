# MVP (seed §8.2: 10k concurrent users, 20 symbols, ~2,000 orders/s needed).
environment        = "mvp"
single_nat_gateway = true

system_nodes = { instance_types = ["t3.medium"], count = 1, capacity_type = "ON_DEMAND" }
api_nodes    = { instance_types = ["t3.medium", "t3a.medium"], count = 1, capacity_type = "SPOT" }
worker_nodes = { instance_types = ["t3.medium", "t3a.medium"], count = 1, capacity_type = "SPOT" }
node_disk_gb = 30

database = { instance_class = "db.t4g.small", allocated_storage = 20, iops = 0, multi_az = false, reserved = false }
redis    = { node_type = "cache.t4g.small", replicas = 1, automatic_failover = true, reserved = false }

api_replicas     = { min = 1, max = 3 }
api_resources    = { cpu = "500m", memory = "512Mi" }
worker_resources = { cpu = "150m", memory = "192Mi" }
