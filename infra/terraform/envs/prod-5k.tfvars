# The seed's 5,000 orders/s plan (5000-tps-plan.md, "Compute Resources" and "Data Storage").
# These are also the variables' defaults; tests/unit/test_terraform.py keeps the two equal.
environment = "prod-5k"

# The seed's "EKS Node" pool, 4 × c6i.2xlarge, is our on-demand system pool.
system_nodes = { instance_types = ["c6i.2xlarge"], count = 4, capacity_type = "ON_DEMAND" }
api_nodes    = { instance_types = ["c6i.xlarge", "c6a.xlarge", "c5.xlarge"], count = 5, capacity_type = "SPOT" }
worker_nodes = { instance_types = ["c6i.large", "c6a.large", "c5.large"], count = 10, capacity_type = "SPOT" }

# The seed's "1TB, 16K IOPS" gp3 volume; the instance is meant for a 1-year reserved instance.
database = { instance_class = "db.r6g.2xlarge", allocated_storage = 1000, iops = 16000, multi_az = true, reserved = true }
redis    = { node_type = "cache.r6g.xlarge", replicas = 1, automatic_failover = true, reserved = true }

# Off: Redis Streams carry the orders. kafka.m5.2xlarge stands in for the seed's c5.2xlarge.
kafka = { enabled = false, broker_type = "kafka.m5.2xlarge", brokers = 3, ebs_gb = 1000 }

shards           = 10
api_replicas     = { min = 5, max = 10 }
api_resources    = { cpu = "1500m", memory = "2Gi" }
worker_resources = { cpu = "1500m", memory = "2Gi" } # one worker per c6i.large
