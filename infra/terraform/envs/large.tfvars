# Large (seed §8.2: 500k concurrent users, 500 symbols, 3 × c6i.xlarge sharded).
environment = "large"

system_nodes = { instance_types = ["m6i.large"], count = 2, capacity_type = "ON_DEMAND" }
api_nodes    = { instance_types = ["c6i.xlarge", "c6a.xlarge", "c5.xlarge"], count = 3, capacity_type = "SPOT" }
worker_nodes = { instance_types = ["c6i.xlarge", "c6a.xlarge", "c5.xlarge"], count = 3, capacity_type = "SPOT" }

database = { instance_class = "db.r6g.large", allocated_storage = 400, iops = 12000, multi_az = true, reserved = true }
redis    = { node_type = "cache.r6g.large", replicas = 1, automatic_failover = true, reserved = true }

api_replicas     = { min = 3, max = 6 }
api_resources    = { cpu = "1500m", memory = "2Gi" }
worker_resources = { cpu = "900m", memory = "1Gi" } # four shards fit on one c6i.xlarge
