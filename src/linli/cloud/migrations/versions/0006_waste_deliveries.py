"""The waste service's deliveries under way: a claimed notice or incident waits here, under its
sender's lease, until it is delivered or recorded as failed; if its sender dies first, another
waste service sends it when the lease runs out (as the notifier's outbox, 0004)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "waste_delivery",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("contact", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),  # subject, text and JSON as sent
        sa.Column("thread", sa.Text, nullable=False),
        sa.Column("lease_s", sa.Float, nullable=False),
    )
    op.create_index("waste_delivery_by_lease", "waste_delivery", ["lease_s"])
