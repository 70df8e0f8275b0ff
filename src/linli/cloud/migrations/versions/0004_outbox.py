"""Notices claimed and not yet sent: the outbox.

A notifier claims a notice (a row in `told`) and then sends it; one whose host died in
between left a claim that said "told" for a notice nobody sent. Each notice now waits here
under its sender's lease until it is delivered or recorded as failed; another notifier sends
it when the lease runs out.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("subscription", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("notice", sa.Text, nullable=False),
        sa.Column("lease_s", sa.Float, nullable=False),
    )
    op.create_index("outbox_by_lease", "outbox", ["lease_s"])
