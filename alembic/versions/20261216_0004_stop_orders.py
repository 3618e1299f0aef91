"""Stop orders and GTD: the orders table's type holds STOP_LIMIT and STOP_MARKET, and the
orders gain stop_price, expire_at_ms and triggered.

`type` was VARCHAR(6), sized for LIMIT and MARKET; it becomes VARCHAR(16) (MySQL/MariaDB
rewrite the column: NOT NULL is restated, as MODIFY COLUMN would drop it). The new columns
are nullable and empty on the orders there are: none of them is a stop or GTD. A status of
UNTRIGGERED (11 characters) and a time in force of GTD fit the columns they have.

Downgrade narrows `type` again, which the database refuses while it holds stop orders (a
value too long for VARCHAR(6)): remove those first. Then it drops the columns.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-16 00:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column(
        "orders",
        "type",
        existing_type=sa.String(length=6),
        type_=sa.String(length=16),
        existing_nullable=False,
    )
    op.add_column("orders", sa.Column("stop_price", sa.BigInteger(), nullable=True))
    op.add_column("orders", sa.Column("expire_at_ms", sa.BigInteger(), nullable=True))
    op.add_column("orders", sa.Column("triggered", sa.Boolean(), nullable=True))


def downgrade() -> None:
    # The step the database may refuse goes first: MySQL commits each ALTER as it goes, so
    # a refusal after the drops would leave the table half downgraded.
    op.alter_column(
        "orders",
        "type",
        existing_type=sa.String(length=16),
        type_=sa.String(length=6),
        existing_nullable=False,
    )
    op.drop_column("orders", "triggered")
    op.drop_column("orders", "expire_at_ms")
    op.drop_column("orders", "stop_price")
