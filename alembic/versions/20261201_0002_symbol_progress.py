"""Symbol progress: per symbol, the last event sequence number the batcher applied.

A hot-shard migration moves a symbol's events from one `events:{shard}` stream to another;
the batcher applies each symbol's events in sequence order across streams, and keeps how
far it got here, in the same transaction as the rows.

A database with history gets a row of NULL (not known) for every symbol that has orders:
the rows do not say which sequence number the last applied event had (a cancel leaves
none), so the batcher takes the next event it reads for such a symbol as where it is.
Upgrade with the batcher caught up (or stopped on an empty backlog) for that to hold.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 00:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# timestamptz on PostgreSQL; DATETIME with microseconds on MySQL/MariaDB (as in 0001).
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
NOW = sa.text("CURRENT_TIMESTAMP(6)")
MYSQL = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin", "mysql_engine": "InnoDB"}


def upgrade() -> None:
    op.create_table(
        "symbol_progress",
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=True),
        sa.Column("updated_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("symbol", name=op.f("pk_symbol_progress")),
        **MYSQL,
    )
    op.execute("INSERT INTO symbol_progress (symbol) SELECT DISTINCT symbol FROM orders")


def downgrade() -> None:
    op.drop_table("symbol_progress")
