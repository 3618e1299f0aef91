"""infra/terraform read with python-hcl2 (no providers, no network): what each environment
runs on, and the security properties that must not regress."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from spot.cost import load_variables, parse_hcl

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "infra" / "terraform"
ENVS = ("dev", "mvp", "growth", "large", "prod-5k")
WORLD = {"0.0.0.0/0", "::/0"}


@cache
def config() -> dict[str, dict]:
    """All .tf files merged: {"resource": {"type.name": body}, "module": {name: body}, ...}."""
    merged: dict[str, dict] = {}
    for path in sorted(TF.glob("*.tf")):
        for kind, blocks in parse_hcl(path.read_text()).items():
            for block in blocks if isinstance(blocks, list) else [blocks]:
                merged.setdefault(kind, {}).update(flatten(kind, block))
    return merged


def flatten(kind: str, block: dict) -> dict:
    if kind in ("resource", "data"):
        return {f"{t}.{n}": body for t, named in block.items() for n, body in named.items()}
    return block


def resource(address: str) -> dict:
    return config()["resource"][address]


def resources_of(kind: str) -> dict[str, dict]:
    return {a: b for a, b in config()["resource"].items() if a.startswith(kind + ".")}


def env(name: str) -> dict:
    return load_variables(TF, TF / "envs" / f"{name}.tfvars")


def one(block: dict | list) -> dict:
    """A nested block: python-hcl2 gives a list of one dict."""
    return block[0] if isinstance(block, list) else block


# --- sizes per environment --------------------------------------------------------------

# environment: (system, api, worker) as (first instance type, count, capacity), then
# (db class, Multi-AZ, reserved), (redis node, replicas, failover)
EXPECTED = {
    "dev": (
        [("t3.medium", 1, "ON_DEMAND"), ("t3.medium", 1, "SPOT"), ("t3.medium", 1, "SPOT")],
        ("db.t4g.micro", False, False),
        ("cache.t4g.micro", 0, False),
    ),
    "mvp": (
        [("t3.medium", 1, "ON_DEMAND"), ("t3.medium", 1, "SPOT"), ("t3.medium", 1, "SPOT")],
        ("db.t4g.small", False, False),
        ("cache.t4g.small", 1, True),
    ),
    "growth": (
        [("t3.medium", 2, "ON_DEMAND"), ("c6i.large", 2, "SPOT"), ("c6i.large", 1, "SPOT")],
        ("db.t4g.medium", True, False),
        ("cache.t4g.medium", 1, True),
    ),
    "large": (
        [("m6i.large", 2, "ON_DEMAND"), ("c6i.xlarge", 3, "SPOT"), ("c6i.xlarge", 3, "SPOT")],
        ("db.r6g.large", True, True),
        ("cache.r6g.large", 1, True),
    ),
    "prod-5k": (
        [("c6i.2xlarge", 4, "ON_DEMAND"), ("c6i.xlarge", 5, "SPOT"), ("c6i.large", 10, "SPOT")],
        ("db.r6g.2xlarge", True, True),
        ("cache.r6g.xlarge", 1, True),
    ),
}


def test_one_var_file_per_seed_size():
    files = {p.stem for p in (TF / "envs").glob("*.tfvars")}
    assert files == set(ENVS)
    for name in ENVS:
        assert env(name)["environment"] == name


@pytest.mark.parametrize("name", ENVS)
def test_node_pools_database_and_redis_per_environment(name):
    nodes, (db_class, multi_az, reserved), (cache_node, replicas, failover) = EXPECTED[name]
    v = env(name)
    for pool, (itype, count, capacity) in zip(("system", "api", "worker"), nodes, strict=True):
        group = v[f"{pool}_nodes"]
        assert (group["instance_types"][0], group["count"], group["capacity_type"]) == (
            itype,
            count,
            capacity,
        ), pool
    db = v["database"]
    assert (db["instance_class"], db["multi_az"], db["reserved"]) == (db_class, multi_az, reserved)
    r = v["redis"]
    assert (r["node_type"], r["replicas"], r["automatic_failover"]) == (
        cache_node,
        replicas,
        failover,
    )
    assert v["kafka"]["enabled"] is False


def test_the_5000_orders_per_second_plan_is_the_seeds():
    v = env("prod-5k")
    assert v["api_nodes"]["count"] == 5 and v["api_nodes"]["instance_types"][0] == "c6i.xlarge"
    assert (
        v["worker_nodes"]["count"] == 10 and v["worker_nodes"]["instance_types"][0] == "c6i.large"
    )
    assert v["api_nodes"]["capacity_type"] == v["worker_nodes"]["capacity_type"] == "SPOT"
    assert v["system_nodes"]["capacity_type"] == "ON_DEMAND"
    assert v["database"] == {
        "instance_class": "db.r6g.2xlarge",
        "allocated_storage": 1000,
        "iops": 16000,
        "multi_az": True,
        "reserved": True,
    }
    # MSK has no c5 brokers: kafka.m5.2xlarge stands in for the seed's c5.2xlarge.
    assert v["kafka"]["broker_type"] == "kafka.m5.2xlarge" and v["kafka"]["brokers"] == 3
    assert v["shards"] == 10


def test_defaults_are_the_5000_orders_per_second_plan():
    defaults, plan = load_variables(TF, None), env("prod-5k")
    for name in defaults.keys() & plan.keys():
        assert defaults[name] == plan[name], name


@pytest.mark.parametrize("name", ENVS)
def test_a_spot_pool_draws_on_one_size_only(name):
    """Extra instance types widen the spot pools; they must be the same size as the first."""
    for pool in ("system", "api", "worker"):
        types = env(name)[f"{pool}_nodes"]["instance_types"]
        assert len({t.split(".")[1] for t in types}) == 1, (pool, types)


def test_node_groups_take_capacity_and_types_from_the_variables():
    groups = config()["module"]["eks"]["eks_managed_node_groups"]
    assert set(groups) == {"system", "api", "worker"}
    for pool, g in groups.items():
        assert g["capacity_type"] == f"${{var.{pool}_nodes.capacity_type}}"
        assert g["instance_types"] == f"${{var.{pool}_nodes.instance_types}}"
        assert g["desired_size"] == f"${{var.{pool}_nodes.count}}"
    validation = one(config()["variable"]["system_nodes"]["validation"])
    assert 'capacity_type == "ON_DEMAND"' in validation["condition"]


def test_the_worker_node_group_says_how_a_reclaimed_worker_recovers():
    text = (TF / "eks.tf").read_text()
    comment = text[: text.index("    worker = {")].rsplit("\n\n", 1)[1]
    for words in ("reclaimed", "snapshot", "Redis", "replays", "orders:{shard}", "stream id"):
        assert words in comment, words


def test_modules_are_pinned_to_exact_versions():
    for name, body in config()["module"].items():
        assert body["source"].startswith("terraform-aws-modules/"), name
        assert re.fullmatch(r"\d+\.\d+\.\d+", body["version"]), name


def test_vpc_spans_three_zones_with_private_subnets():
    vpc = config()["module"]["vpc"]
    assert vpc["azs"] == "${local.azs}" and vpc["private_subnets"] == "${local.private_subnets}"
    zones = one(config()["data"]["aws_availability_zones.available"]["filter"])
    assert zones["name"] == "zone-name" and '["a", "b", "c"]' in zones["values"]
    assert config()["module"]["eks"]["subnet_ids"] == "${module.vpc.private_subnets}"


# --- security --------------------------------------------------------------------------


def world_open_ingress() -> set[str]:
    found = set()
    for address, body in resources_of("aws_vpc_security_group_ingress_rule").items():
        if {body.get("cidr_ipv4"), body.get("cidr_ipv6")} & WORLD:
            found.add(address)
    for address, body in resources_of("aws_security_group_rule").items():
        if body["type"] == "ingress" and WORLD & set(body.get("cidr_blocks", [])):
            found.add(address)
    for address, body in resources_of("aws_security_group").items():
        for rule in body.get("ingress", []):
            if WORLD & set(rule.get("cidr_blocks", []) + rule.get("ipv6_cidr_blocks", [])):
                found.add(address)
    for key, rule in config()["module"]["eks"]["node_security_group_additional_rules"].items():
        if rule["type"] == "ingress" and WORLD & set(rule.get("cidr_blocks", [])):
            found.add(f"module.eks.{key}")
    return found


def test_only_the_public_load_balancer_is_open_to_the_world():
    assert world_open_ingress() == {"aws_vpc_security_group_ingress_rule.alb_https"}
    rule = resource("aws_vpc_security_group_ingress_rule.alb_https")
    assert rule["security_group_id"] == "${aws_security_group.alb.id}"
    assert (rule["from_port"], rule["to_port"]) == (443, 443)
    assert resource("aws_lb.api")["security_groups"] == ["${aws_security_group.alb.id}"]
    assert config()["module"]["vpc"]["default_security_group_ingress"] == []


def test_data_stores_accept_only_the_cluster_nodes():
    nodes = "${module.eks.node_security_group_id}"
    ports = {"postgres_from_nodes": 5432, "redis_from_nodes": 6379, "kafka_from_nodes": 9098}
    for name, port in ports.items():
        rule = resource(f"aws_vpc_security_group_ingress_rule.{name}")
        assert rule["referenced_security_group_id"] == nodes
        assert rule["from_port"] == rule["to_port"] == port
    node_rules = config()["module"]["eks"]["node_security_group_additional_rules"]
    assert node_rules["alb_to_api"]["source_security_group_id"] == "${aws_security_group.alb.id}"
    assert resource("aws_db_instance.postgres")["publicly_accessible"] is False


def test_database_is_multi_az_gp3_with_provisioned_iops_and_encrypted():
    db = resource("aws_db_instance.postgres")
    assert db["multi_az"] == "${var.database.multi_az}"
    assert db["storage_type"] == "gp3" and "var.database.iops" in db["iops"]
    assert db["storage_encrypted"] is True and db["kms_key_id"] == "${aws_kms_key.data.arn}"
    assert db["performance_insights_kms_key_id"] == "${aws_kms_key.data.arn}"
    assert db["deletion_protection"] is True and db["backup_retention_period"] >= 7
    params = resource("aws_db_parameter_group.postgres")["parameter"]
    assert {"name": "rds.force_ssl", "value": "1"} in params


def test_redis_has_a_replica_failover_and_encryption():
    redis = resource("aws_elasticache_replication_group.redis")
    assert redis["num_cache_clusters"] == "${1 + var.redis.replicas}"
    assert redis["automatic_failover_enabled"] == "${var.redis.automatic_failover}"
    assert redis["at_rest_encryption_enabled"] is True
    assert redis["transit_encryption_enabled"] is True
    assert redis["kms_key_id"] == "${aws_kms_key.data.arn}" and "auth_token" in redis
    params = resource("aws_elasticache_parameter_group.redis")["parameter"]
    assert {"name": "maxmemory-policy", "value": "noeviction"} in params


def test_kafka_is_optional_off_by_default_and_encrypted():
    assert config()["variable"]["kafka"]["default"]["enabled"] is False
    msk = resource("aws_msk_cluster.kafka")
    assert msk["count"] == "${var.kafka.enabled ? 1 : 0}"
    transit = one(one(msk["encryption_info"])["encryption_in_transit"])
    assert transit == {"client_broker": "TLS", "in_cluster": True}
    assert one(msk["encryption_info"])["encryption_at_rest_kms_key_arn"]
    assert one(one(msk["client_authentication"])["sasl"])["iam"] is True


def test_everything_at_rest_is_encrypted():
    key = "${aws_kms_key.data.arn}"
    for address, body in resources_of("aws_secretsmanager_secret").items():
        assert body["kms_key_id"] == key, address
    for address, body in resources_of("aws_cloudwatch_log_group").items():
        assert body["kms_key_id"] == key, address
    assert resource("aws_kms_key.data")["enable_key_rotation"] is True
    ecr = one(resource("aws_ecr_repository.spot")["encryption_configuration"])
    assert ecr == {"encryption_type": "KMS", "kms_key": key}
    eks = config()["module"]["eks"]
    assert eks["cluster_encryption_config"] == {"resources": ["secrets"]}
    assert config()["locals"]["node_disk"]["xvda"]["ebs"]["encrypted"] is True
    assert config()["module"]["vpc"]["flow_log_cloudwatch_log_group_kms_key_id"] == key


def test_everything_in_transit_is_encrypted():
    for address, listener in resources_of("aws_lb_listener").items():
        assert listener["protocol"] == "HTTPS", address
        assert listener["ssl_policy"].startswith("ELBSecurityPolicy-TLS13"), address
    database_url = str(resource("aws_secretsmanager_secret_version.database")["secret_string"])
    assert "sslmode=require" in database_url
    redis_url = str(resource("aws_secretsmanager_secret_version.redis")["secret_string"])
    assert "rediss://" in redis_url


# --- workloads -------------------------------------------------------------------------


def container(address: str) -> dict:
    spec = one(one(one(resource(address)["spec"])["template"])["spec"])
    return one(spec["container"])


def test_one_worker_deployment_per_shard_never_two_at_once():
    worker = resource("kubernetes_deployment_v1.worker")
    assert "range(var.shards)" in worker["for_each"]
    assert config()["variable"]["shards"]["default"] == 10
    spec = one(worker["spec"])
    assert spec["replicas"] == 1 and one(spec["strategy"])["type"] == "Recreate"
    assert container("kubernetes_deployment_v1.worker")["args"] == [
        "worker",
        "--shards",
        "${each.key}",
    ]


def test_api_autoscales_and_batcher_runs_on_demand():
    # Without an image (the first apply) the registry is built and no pod is scheduled.
    assert resource("kubernetes_deployment_v1.api")["count"] == "${local.deploy ? 1 : 0}"
    assert container("kubernetes_deployment_v1.api")["args"] == ["api"]
    assert container("kubernetes_deployment_v1.batcher")["args"] == ["batcher"]
    hpa = one(resource("kubernetes_horizontal_pod_autoscaler_v2.api")["spec"])
    assert hpa["min_replicas"] == "${var.api_replicas.min}"
    assert (
        one(hpa["scale_target_ref"])["name"]
        == "${kubernetes_deployment_v1.api[0].metadata[0].name}"
    )
    batcher = one(
        one(one(resource("kubernetes_deployment_v1.batcher")["spec"])["template"])["spec"]
    )
    assert batcher["node_selector"] == {"spot.role": "system"}


def test_pods_take_secrets_from_secrets_manager_and_run_locked_down():
    data = resource("kubernetes_secret_v1.spot")["data"]
    assert set(data) == {"SPOT_DATABASE_URL", "SPOT_REDIS_URL", "SPOT_JWT_SECRET"}
    assert all("aws_secretsmanager_secret_version" in value for value in data.values())
    for name in ("api", "worker", "batcher"):
        ctx = one(container(f"kubernetes_deployment_v1.{name}")["security_context"])
        assert ctx["read_only_root_filesystem"] is True
        assert ctx["allow_privilege_escalation"] is False


def test_variables_are_described_and_the_sizes_validated():
    variables = config()["variable"]
    assert all("description" in body for body in variables.values())
    for name in ("environment", "system_nodes", "api_nodes", "worker_nodes", "database", "redis"):
        assert "validation" in variables[name], name


def test_outputs_name_the_endpoints():
    outputs = config()["output"]
    for name in ("api_url", "cluster_endpoint", "postgres_endpoint", "redis_primary_endpoint"):
        assert name in outputs


def test_dockerfile_builds_the_spot_command():
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    # the package itself, with its MySQL driver: one image serves either database
    assert re.search(r'pip install .*\s"\.\[mysql\]"(\s|$)', text)
    assert 'ENTRYPOINT ["spot"]' in text
    assert "USER 10001" in text  # matches run_as_user in workloads.tf


def test_spot_cost_prices_resources_this_configuration_declares():
    from spot.cost import PRICES, PriceTable, estimate

    for priced in estimate(load_variables(TF, None), PriceTable(PRICES)):
        address = re.sub(r"\[[^\]]*\]", "", priced.name)  # drop [0], ["api"]
        if address.startswith("module."):
            assert address.split(".")[1] in config()["module"], priced.name
        else:
            assert address in config()["resource"], priced.name
