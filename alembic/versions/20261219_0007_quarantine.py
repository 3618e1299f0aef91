"""Quarantine: stream entries the database refused, kept whole with the error.

A batch the database refuses (a value a column cannot hold, text it cannot store, a
constraint broken) would refuse every retry and stop persistence for every user; the
batcher instead splits the flush until the refused entries stand alone and writes each
here, moving its stream's offset past it in the same transaction.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 00:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# timestamptz on PostgreSQL; DATETIME with microseconds on MySQL/MariaDB (as in 0001).
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
NOW = sa.text("CURRENT_TIMESTAMP(6)")
MYSQL = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin", "mysql_engine": "InnoDB"}
# bytea on PostgreSQL; LONGBLOB on MySQL/MariaDB (BLOB holds 64 KB, a worker batch more).
BINARY = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "quarantine",
        sa.Column("consumer", sa.String(length=32), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("entry_id", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("fields", BINARY, nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("consumer", "stream", "entry_id", name=op.f("pk_quarantine")),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("quarantine")
