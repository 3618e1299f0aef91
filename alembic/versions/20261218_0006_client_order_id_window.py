"""orders: (user_id, client_order_id) no longer unique, indexed all the same.

A client_order_id is refused as a repeat for SPOT_CLIENT_ORDER_ID_WINDOW_S (an hour by
default) by the PLACE script, which is where the duplicate check lives; after that window
a user may use it again, as on Binance (unique among open orders). The table's unique
constraint turned such a reuse into a batch the database refused (the batcher's COPY
failing on it, and every order after it waiting). The index stays for lookups by a
user's client order id; it costs each COPY'd row what the constraint's did.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-16 00:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_orders_user_id_client_order_id"), "orders", ["user_id", "client_order_id"]
    )
    op.drop_constraint(op.f("uq_orders_user_id_client_order_id"), "orders", type_="unique")


def downgrade() -> None:
    # Fails where a user has used a client order id twice since the upgrade.
    op.create_unique_constraint(
        op.f("uq_orders_user_id_client_order_id"), "orders", ["user_id", "client_order_id"]
    )
    op.drop_index(op.f("ix_orders_user_id_client_order_id"), table_name="orders")
