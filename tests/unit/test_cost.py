"""`spot cost`: prices from infra/prices.csv, Infracost's arithmetic and output shape."""

from __future__ import annotations

import csv
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from spot import cost

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "infra" / "terraform"
ENVS = ("dev", "mvp", "growth", "large", "prod-5k")


@pytest.fixture(scope="module")
def prices() -> cost.PriceTable:
    return cost.PriceTable(cost.PRICES)


def variables(name: str) -> dict:
    return cost.load_variables(TF, TF / "envs" / f"{name}.tfvars")


def by_name(resources: list[cost.Resource]) -> dict[str, cost.Resource]:
    return {r.name: r for r in resources}


def test_one_c6i_large_on_demand_is_62_05_a_month(prices):
    group = {"instance_types": ["c6i.large"], "count": 1, "capacity_type": "ON_DEMAND"}
    r = cost.node_group("worker", group, 0, prices, on_demand=False)
    instance = r.components[0]
    assert prices.price("ec2", "c6i.large") == Decimal("0.085")
    assert instance.name == "Instance usage (Linux/UNIX, on-demand, c6i.large)"
    assert instance.monthly_quantity == 730
    assert instance.monthly_cost == Decimal("62.05")
    out = cost.to_infracost_json([r], "infra/terraform", [])
    component = out["projects"][0]["breakdown"]["resources"][0]["costComponents"][0]
    assert component["monthlyCost"] == "62.05" and component["hourlyQuantity"] == "1"


@pytest.mark.parametrize(
    ("count", "base", "percentage", "expected"),
    [
        (10, 0, 0, (0, 10)),  # a SPOT group
        (10, 0, 100, (10, 0)),  # an ON_DEMAND group
        (10, 1, 25, (4, 6)),  # 1 + ceil(9 × 25 %) on demand
        (5, 2, 50, (4, 1)),  # 2 + ceil(1.5)
        (1, 1, 0, (1, 0)),
    ],
)
def test_spot_share_is_split_as_infracost_splits_mixed_groups(count, base, percentage, expected):
    assert cost.split_on_demand_spot(count, base, percentage) == expected


def test_spot_pools_are_priced_at_spot_unless_asked_for_on_demand(prices):
    v = variables("prod-5k")
    planned = by_name(cost.estimate(v, prices))
    api = planned['module.eks.module.eks_managed_node_group["api"].aws_eks_node_group.this[0]']
    assert api.components[0].name == "Instance usage (Linux/UNIX, spot, c6i.xlarge)"
    assert api.components[0].monthly_quantity == 5 * 730
    assert api.components[0].price == prices.price("ec2", "c6i.xlarge", "spot")
    on_demand = by_name(cost.estimate(v, prices, on_demand=True))
    api = on_demand['module.eks.module.eks_managed_node_group["api"].aws_eks_node_group.this[0]']
    assert api.components[0].price == Decimal("0.17")


def test_multi_az_doubles_the_database_and_only_extra_iops_are_billed(prices):
    db = {
        "instance_class": "db.r6g.2xlarge",
        "allocated_storage": 1000,
        "iops": 16000,
        "multi_az": True,
        "reserved": False,
    }
    instance, storage, iops = cost.database(db, prices, on_demand=False).components
    assert instance.monthly_quantity == 2 * 730 and instance.price == Decimal("0.899")
    assert storage.monthly_cost == 1000 * Decimal("0.115") * 2
    assert iops.monthly_quantity == 16000 - 12000
    single = cost.database({**db, "multi_az": False, "iops": 0}, prices, on_demand=False)
    assert len(single.components) == 2 and single.components[0].monthly_quantity == 730


def test_reserved_capacity_is_cheaper_than_on_demand(prices):
    v = variables("prod-5k")
    planned = by_name(cost.estimate(v, prices))
    on_demand = by_name(cost.estimate(v, prices, on_demand=True))
    for name in ("aws_db_instance.postgres", "aws_elasticache_replication_group.redis"):
        assert "reserved" in planned[name].components[0].name
        assert planned[name].monthly_cost < on_demand[name].monthly_cost


def test_the_5000_orders_per_second_plan_costs_what_the_readme_says(prices):
    """Sanity against the seed (~$7,000 on demand, ~$3,500 with spot + reserved): ours is
    below both, mostly because Kafka is off and the seed's RDS and Redis rows were high."""
    v = variables("prod-5k")
    planned = cost.total(cost.estimate(v, prices))
    on_demand = cost.total(cost.estimate(v, prices, on_demand=True))
    assert planned == Decimal("3437.453")
    assert on_demand == Decimal("4803.575")
    assert planned < Decimal(3500) < on_demand < Decimal(7000)


def test_kafka_adds_three_m5_2xlarge_brokers_when_enabled(prices):
    v = variables("prod-5k")
    v["kafka"] = {**v["kafka"], "enabled": True}
    msk = by_name(cost.estimate(v, prices))["aws_msk_cluster.kafka[0]"]
    brokers, storage = msk.components
    assert brokers.name == "Instance (kafka.m5.2xlarge)"
    assert brokers.monthly_cost == 3 * Decimal("0.84") * 730
    assert storage.monthly_quantity == 3000


@pytest.mark.parametrize("name", ENVS)
def test_every_environment_is_priced_and_bigger_ones_cost_more(name, prices):
    totals = [cost.total(cost.estimate(variables(e), prices)) for e in ENVS]
    assert totals == sorted(totals)
    assert cost.total(cost.estimate(variables(name), prices)) > 0


def test_every_price_row_says_where_and_when_it_came_from():
    with cost.PRICES.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        assert row["source"].startswith("https://aws.amazon.com/"), row
        date.fromisoformat(row["date"])
        assert Decimal(row["price"]) > 0
        assert row["purchase"] in ("on_demand", "spot", "reserved")


def test_json_has_infracosts_shape_and_adds_up(capsys):
    assert cost.main(["--var-file", "envs/prod-5k.tfvars", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    project = out["projects"][0]
    assert project["name"] == "infra/terraform"
    resources = project["breakdown"]["resources"]
    for r in resources:
        assert {"name", "monthlyCost", "costComponents"} <= r.keys()
        parts = sum(Decimal(c["monthlyCost"]) for c in r["costComponents"])
        assert Decimal(r["monthlyCost"]) == parts
        for c in r["costComponents"]:
            assert {"name", "unit", "hourlyQuantity", "monthlyQuantity", "price"} <= c.keys()
            assert all(isinstance(c[k], str) for k in ("price", "monthlyCost"))
    total = sum(Decimal(r["monthlyCost"]) for r in resources)
    assert isinstance(out["totalMonthlyCost"], str)
    assert Decimal(out["totalMonthlyCost"]) == total == Decimal("3437.453")


def test_table_shows_both_totals(capsys):
    assert cost.main(["--var-file", "envs/prod-5k.tfvars"]) == 0
    out = capsys.readouterr().out
    assert "aws_db_instance.postgres" in out
    assert "OVERALL TOTAL (as planned: spot + reserved)" in out and "$3,437.45" in out
    assert "All on-demand" in out and "$4,803.58" in out


def test_a_missing_var_file_is_an_error_not_a_traceback(capsys):
    assert cost.main(["--var-file", "envs/nope.tfvars"]) == 2
    assert "nope.tfvars" in capsys.readouterr().err
