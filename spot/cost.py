"""`spot cost`: what infra/terraform costs per month, before anyone runs terraform apply.

Reads the root module's variable defaults and an optional .tfvars file (python-hcl2), lists
the billable resources the module creates for those values, and prices each one from the
price table kept in the repo (infra/prices.csv: one rate per service, SKU and purchase
option, each row with its source and date). Output follows Infracost: months of 730 hours,
a table per resource, and with --json the shape of `infracost breakdown --format json`.

Usage-priced items (data transfer, NAT and load-balancer processing, log ingestion) are
left out, as Infracost leaves them out without a usage file; infra/terraform/README.md
estimates them for 5,000 orders/s.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any

HOURS_PER_MONTH = Decimal(730)
REPO = Path(__file__).resolve().parents[1]
TF_DIR = REPO / "infra" / "terraform"
PRICES = REPO / "infra" / "prices.csv"
PRICED_REGION = "us-east-1"

# Infracost's labels for purchase options in component names.
LABELS = {"on_demand": "on-demand", "spot": "spot", "reserved": "reserved"}


@dataclass(frozen=True)
class Component:
    name: str
    unit: str
    monthly_quantity: Decimal
    price: Decimal
    hourly: bool  # priced per hour (quantity = units × 730) rather than per month

    @property
    def monthly_cost(self) -> Decimal:
        return self.monthly_quantity * self.price


@dataclass
class Resource:
    name: str
    resource_type: str
    components: list[Component] = field(default_factory=list)

    @property
    def monthly_cost(self) -> Decimal:
        return sum((c.monthly_cost for c in self.components), Decimal(0))


class PriceTable:
    def __init__(self, path: Path) -> None:
        with path.open(newline="") as f:
            self._rows = {(r["service"], r["sku"], r["purchase"]): r for r in csv.DictReader(f)}

    def price(self, service: str, sku: str, purchase: str = "on_demand") -> Decimal:
        row = self._rows.get((service, sku, purchase))
        if row is None:
            raise KeyError(f"no {purchase} price for {service} {sku} in infra/prices.csv")
        return Decimal(row["price"])


def load_variables(tf_dir: Path, var_file: Path | None) -> dict[str, Any]:
    """Variable values the way terraform resolves them: defaults, then the var file."""
    values: dict[str, Any] = {}
    for path in sorted(tf_dir.glob("*.tf")):
        for block in parse_hcl(path.read_text()).get("variable", []):
            for name, body in block.items():
                if "default" in body:
                    values[name] = body["default"]
    if var_file is not None:
        values.update(parse_hcl(var_file.read_text()))
    return copy.deepcopy(values)


@cache
def parse_hcl(text: str) -> dict[str, Any]:
    """HCL as plain Python values (strings unquoted). Cached: the parser is slow."""
    import hcl2  # a dev tool's dependency: `spot api` and friends must not need it

    options = hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    return hcl2.loads(text, serialization_options=options)


def split_on_demand_spot(count: int, base: int, on_demand_percentage: int) -> tuple[int, int]:
    """Infracost's split of a mixed group: the on-demand base, then the on-demand share of
    the rest rounded up; whatever is left runs on spot."""
    on_demand = base + math.ceil((count - base) * on_demand_percentage / 100)
    return on_demand, count - on_demand


def hours(name: str, units: int | Decimal, price: Decimal) -> Component:
    return Component(name, "hours", Decimal(units) * HOURS_PER_MONTH, price, hourly=True)


def months(name: str, unit: str, quantity: int | Decimal, price: Decimal) -> Component:
    return Component(name, unit, Decimal(quantity), price, hourly=False)


def node_group(
    key: str, group: dict[str, Any], disk_gb: int, prices: PriceTable, on_demand: bool
) -> Resource:
    # Priced on the first instance type, as Infracost does for instance_types.
    itype, count = group["instance_types"][0], int(group["count"])
    # A managed node group is all spot or all on-demand: a mixed group with base 0 and 0 %
    # or 100 % on-demand, which is how Infracost reads a launch template's market type.
    percentage = 100 if on_demand or group["capacity_type"] == "ON_DEMAND" else 0
    counts = zip(("on_demand", "spot"), split_on_demand_spot(count, 0, percentage), strict=True)
    r = Resource(
        f'module.eks.module.eks_managed_node_group["{key}"].aws_eks_node_group.this[0]',
        "aws_eks_node_group",
    )
    for purchase, n in counts:
        if n:
            label = f"Instance usage (Linux/UNIX, {LABELS[purchase]}, {itype})"
            r.components.append(hours(label, n, prices.price("ec2", itype, purchase)))
    storage = months(
        "Storage (general purpose SSD, gp3)", "GB", count * disk_gb, prices.price("ebs", "gp3")
    )
    r.components.append(storage)
    return r


def database(db: dict[str, Any], prices: PriceTable, on_demand: bool) -> Resource:
    purchase = "reserved" if db["reserved"] and not on_demand else "on_demand"
    az, copies = ("Multi-AZ", 2) if db["multi_az"] else ("Single-AZ", 1)
    cls, storage = db["instance_class"], int(db["allocated_storage"])
    r = Resource("aws_db_instance.postgres", "aws_db_instance")
    label = f"Database instance ({LABELS[purchase]}, {az}, {cls})"
    r.components.append(hours(label, copies, prices.price("rds", cls, purchase)))
    gb_price = prices.price("rds-storage", "gp3") * copies
    r.components.append(months("Storage (general purpose SSD, gp3)", "GB", storage, gb_price))
    # gp3 includes 3,000 IOPS below 400 GB and 12,000 from 400 GB; only the rest is billed.
    baseline = 12000 if storage >= 400 else 3000
    extra = max(0, int(db["iops"]) - baseline)
    if extra:
        iops_price = prices.price("rds-iops", "gp3") * copies
        r.components.append(
            months(f"Provisioned IOPS (above {baseline})", "IOPS", extra, iops_price)
        )
    return r


def redis(cfg: dict[str, Any], prices: PriceTable, on_demand: bool) -> Resource:
    purchase = "reserved" if cfg["reserved"] and not on_demand else "on_demand"
    node, nodes = cfg["node_type"], 1 + int(cfg["replicas"])
    r = Resource("aws_elasticache_replication_group.redis", "aws_elasticache_replication_group")
    label = f"ElastiCache ({LABELS[purchase]}, {node})"
    r.components.append(hours(label, nodes, prices.price("elasticache", node, purchase)))
    return r


def kafka(cfg: dict[str, Any], prices: PriceTable) -> Resource:
    broker, n = cfg["broker_type"], int(cfg["brokers"])
    r = Resource("aws_msk_cluster.kafka[0]", "aws_msk_cluster")
    r.components.append(hours(f"Instance ({broker})", n, prices.price("msk", broker)))
    gb = n * int(cfg["ebs_gb"])
    r.components.append(months("Storage", "GB", gb, prices.price("msk-storage", "gp2")))
    return r


def single(name: str, kind: str, component: Component) -> Resource:
    return Resource(name, kind, [component])


def estimate(v: dict[str, Any], prices: PriceTable, on_demand: bool = False) -> list[Resource]:
    """The billable resources of infra/terraform for these variable values."""
    eks = hours("EKS cluster", 1, prices.price("eks", "cluster"))
    nat_price = prices.price("vpc", "nat-gateway")
    nat_count = 1 if v["single_nat_gateway"] else 3
    resources = [single("module.eks.aws_eks_cluster.this[0]", "aws_eks_cluster", eks)]
    for key in ("system", "api", "worker"):
        group = v[f"{key}_nodes"]
        resources.append(node_group(key, group, int(v["node_disk_gb"]), prices, on_demand))
    resources += [
        database(v["database"], prices, on_demand),
        redis(v["redis"], prices, on_demand),
    ]
    if v["kafka"]["enabled"]:
        resources.append(kafka(v["kafka"], prices))
    resources += [
        single(
            f"module.vpc.aws_nat_gateway.this[{i}]",
            "aws_nat_gateway",
            hours("NAT gateway", 1, nat_price),
        )
        for i in range(nat_count)
    ]
    lb = hours("Application load balancer", 1, prices.price("elb", "application"))
    resources.append(single("aws_lb.api", "aws_lb", lb))
    kms = months("Customer master key", "months", 1, prices.price("kms", "key"))
    for name in ("aws_kms_key.data", "module.eks.module.kms.aws_kms_key.this[0]"):
        resources.append(single(name, "aws_kms_key", kms))
    secret = months("Secret", "months", 1, prices.price("secretsmanager", "secret"))
    for name in ("database", "redis", "jwt"):
        resources.append(
            single(f"aws_secretsmanager_secret.{name}", "aws_secretsmanager_secret", secret)
        )
    return resources


def total(resources: list[Resource]) -> Decimal:
    return sum((r.monthly_cost for r in resources), Decimal(0))


def money(d: Decimal) -> str:
    return f"${d.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"


def num(d: Decimal) -> str:
    """Infracost writes decimals as plain strings without trailing zeros."""
    return f"{d.normalize():f}"


def render_table(resources: list[Resource], baseline: Decimal) -> str:
    lines = [f" {'Name':<61} {'Monthly Qty':>11}  {'Unit':<6} {'Monthly Cost':>12}", ""]
    for r in resources:
        lines.append(f" {r.name}")
        for i, c in enumerate(r.components):
            branch = "└─" if i == len(r.components) - 1 else "├─"
            qty = f"{c.monthly_quantity:,.0f}"
            lines.append(
                f" {branch} {c.name:<58} {qty:>11}  {c.unit:<6} {money(c.monthly_cost):>12}"
            )
        lines.append("")
    planned = total(resources)
    saved = baseline - planned
    share = (saved / baseline * 100) if baseline else Decimal(0)
    lines.append(f" {'OVERALL TOTAL (as planned: spot + reserved)':<80} {money(planned):>12}")
    lines.append(f" {'All on-demand':<80} {money(baseline):>12}")
    lines.append(
        f" {'Saved by spot and reserved capacity':<67} {share:>10.1f} %  {money(saved):>12}"
    )
    return "\n".join(lines)


def component_json(c: Component) -> dict[str, Any]:
    return {
        "name": c.name,
        "unit": c.unit,
        "hourlyQuantity": num(c.monthly_quantity / HOURS_PER_MONTH),
        "monthlyQuantity": num(c.monthly_quantity),
        "price": num(c.price),
        "hourlyCost": num(c.monthly_cost / HOURS_PER_MONTH),
        "monthlyCost": num(c.monthly_cost),
    }


def to_infracost_json(
    resources: list[Resource], project: str, var_files: list[str]
) -> dict[str, Any]:
    monthly = total(resources)
    hourly = num(monthly / HOURS_PER_MONTH)
    breakdown = {
        "resources": [
            {
                "name": r.name,
                "resourceType": r.resource_type,
                "metadata": {},
                "hourlyCost": num(r.monthly_cost / HOURS_PER_MONTH),
                "monthlyCost": num(r.monthly_cost),
                "costComponents": [component_json(c) for c in r.components],
                "subresources": [],
            }
            for r in resources
        ],
        "totalHourlyCost": hourly,
        "totalMonthlyCost": num(monthly),
    }
    metadata = {"path": project, "type": "terraform_dir", "terraformVarFiles": var_files}
    return {
        "version": "0.2",
        "currency": "USD",
        "projects": [{"name": project, "metadata": metadata, "breakdown": breakdown}],
        "totalHourlyCost": hourly,
        "totalMonthlyCost": num(monthly),
        "timeGenerated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "summary": {"totalSupportedResources": len(resources), "totalNoPriceResources": 0},
    }


def resolve(var_file: str | None, tf_dir: Path) -> Path | None:
    """A var file as given, or relative to the terraform directory (envs/dev.tfvars)."""
    if var_file is None:
        return None
    for candidate in (Path(var_file), tf_dir / var_file):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(var_file)


def project_name(tf_dir: Path) -> str:
    try:
        return str(tf_dir.resolve().relative_to(REPO))
    except ValueError:
        return str(tf_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spot cost",
        description="Monthly AWS cost of infra/terraform, priced from infra/prices.csv.",
    )
    parser.add_argument("--var-file", help="a .tfvars file, e.g. envs/prod-5k.tfvars")
    parser.add_argument("--json", action="store_true", help="Infracost-shaped JSON")
    parser.add_argument("--on-demand", action="store_true", help="price everything on demand")
    parser.add_argument("--dir", type=Path, default=TF_DIR, help="terraform root module")
    parser.add_argument("--prices", type=Path, default=PRICES, help="price table (CSV)")
    args = parser.parse_args(argv)

    try:
        var_file = resolve(args.var_file, args.dir)
        variables = load_variables(args.dir, var_file)
        prices = PriceTable(args.prices)
        resources = estimate(variables, prices, on_demand=args.on_demand)
        baseline = total(estimate(variables, prices, on_demand=True))
    except (OSError, KeyError) as exc:
        print(f"spot cost: {exc}", file=sys.stderr)
        return 2
    if variables.get("region", PRICED_REGION) != PRICED_REGION:
        print(
            f"spot cost: prices are for {PRICED_REGION}, not {variables['region']}", file=sys.stderr
        )

    if args.json:
        files = [str(var_file)] if var_file else []
        print(json.dumps(to_infracost_json(resources, project_name(args.dir), files), indent=2))
    else:
        print(render_table(resources, baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
