"""Fees: what each side of a trade paid, and each symbol's rates.

`trades.maker_fee` / `taker_fee`: the TRADE event's fees, in the asset each side received
(the buyer's in base, the seller's in quote), negative for a maker's rebate. Trades from
before fees were charged get 0, which is what they were charged. `symbols.maker_fee_bps` /
`taker_fee_bps`: the spec's rates in basis points, 0 for the symbols listed before.

Columns are added (at the end of each table, on every backend): no table is rewritten on
PostgreSQL 11+ for a constant default, and MySQL 8 / MariaDB 10.11 add them instantly.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-15 00:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ZERO = sa.text("0")
COLUMNS = {
    "trades": (("maker_fee", sa.BigInteger()), ("taker_fee", sa.BigInteger())),
    "symbols": (("maker_fee_bps", sa.Integer()), ("taker_fee_bps", sa.Integer())),
}


def upgrade() -> None:
    for table, columns in COLUMNS.items():
        for name, kind in columns:
            op.add_column(table, sa.Column(name, kind, server_default=ZERO, nullable=False))


def downgrade() -> None:
    for table, columns in COLUMNS.items():
        for name, _ in reversed(columns):
            op.drop_column(table, name)
