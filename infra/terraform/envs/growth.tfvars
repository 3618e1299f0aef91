# Growth (seed §8.2: 50k concurrent users, 100 symbols, one c6i.large for matching).
environment = "growth"

system_nodes = { instance_types = ["t3.medium"], count = 2, capacity_type = "ON_DEMAND" }
api_nodes    = { instance_types = ["c6i.large", "c6a.large", "c5.large"], count = 2, capacity_type = "SPOT" }
worker_nodes = { instance_types = ["c6i.large", "c6a.large", "c5.large"], count = 1, capacity_type = "SPOT" }

database = { instance_class = "db.t4g.medium", allocated_storage = 100, iops = 0, multi_az = true, reserved = false }
redis    = { node_type = "cache.t4g.medium", replicas = 1, automatic_failover = true, reserved = false }

api_replicas     = { min = 2, max = 4 }
api_resources    = { cpu = "1000m", memory = "1Gi" }
worker_resources = { cpu = "150m", memory = "256Mi" }
