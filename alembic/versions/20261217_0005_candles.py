"""Candles: each symbol's trades summed per minute, for klines and the 24 h ticker.

The batcher writes them with the trades, in the same transaction. On PostgreSQL the
upgrade builds the candles of the trades already there, so no history is lost; the
backfill is PostgreSQL's SQL, and on MySQL/MariaDB the table starts empty.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-16 00:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin", "mysql_engine": "InnoDB"}
TOTAL = sa.Numeric(38, 0)

# The candles of the trades written before this table existed: a trade's minute is its
# created_at's, as the batcher takes it.
BACKFILL = """
INSERT INTO candles (symbol, open_time, open, high, low, close, volume, quote_volume,
                     taker_buy_volume, taker_buy_quote_volume, trades, first_seq, last_seq)
SELECT g.symbol, g.open_time, o.price, g.high, g.low, c.price, g.volume, g.quote_volume,
       g.taker_buy_volume, g.taker_buy_quote_volume, g.trades, g.first_seq, g.last_seq
FROM (
    SELECT symbol, (floor(extract(epoch FROM created_at) / 60) * 60000)::bigint AS open_time,
           max(price) AS high, min(price) AS low, sum(quantity::numeric) AS volume,
           sum(price::numeric * quantity) AS quote_volume,
           sum(CASE WHEN taker_side = 'BUY' THEN quantity::numeric ELSE 0 END)
               AS taker_buy_volume,
           sum(CASE WHEN taker_side = 'BUY' THEN price::numeric * quantity ELSE 0 END)
               AS taker_buy_quote_volume,
           count(*) AS trades, min(seq) AS first_seq, max(seq) AS last_seq
    FROM trades GROUP BY 1, 2
) AS g
JOIN trades AS o ON o.symbol = g.symbol AND o.seq = g.first_seq
JOIN trades AS c ON c.symbol = g.symbol AND c.seq = g.last_seq
"""


def upgrade() -> None:
    op.create_table(
        "candles",
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("open_time", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("open", sa.BigInteger(), nullable=False),
        sa.Column("high", sa.BigInteger(), nullable=False),
        sa.Column("low", sa.BigInteger(), nullable=False),
        sa.Column("close", sa.BigInteger(), nullable=False),
        sa.Column("volume", TOTAL, nullable=False),
        sa.Column("quote_volume", TOTAL, nullable=False),
        sa.Column("taker_buy_volume", TOTAL, nullable=False),
        sa.Column("taker_buy_quote_volume", TOTAL, nullable=False),
        sa.Column("trades", sa.BigInteger(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("symbol", "open_time", name=op.f("pk_candles")),
        **MYSQL,
    )
    if op.get_context().dialect.name == "postgresql":
        op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_table("candles")
