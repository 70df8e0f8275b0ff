"""Alerts told by group (issue 35): one message per subscription and group of alerts.

`alert_group` keeps, per subscription and group (the values of its `group_by` labels), when the
group was last told (the claim: one notifier wins each message) and when a change waits to be
told (`due_s`, `changes`). `group_resolved` keeps the alerts of a group that resolved and wait to be told
in its next message.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    op.create_table(
        "alert_group",
        sa.Column("subscription", sa.Text, nullable=False),
        sa.Column("gkey", sa.Text, nullable=False),
        sa.Column("last_s", sa.Float, nullable=False),
        sa.Column("due_s", sa.Float, nullable=True),  # NULL: no change waits
        # Resolutions kept for it so far: a notifier putting the group off does so only if no
        # resolution came since it looked (another notifier may have made it due meanwhile).
        sa.Column("changes", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("subscription", "gkey"),
    )
    op.create_index("alert_group_by_due", "alert_group", ["due_s"])
    op.create_table(
        "group_resolved",
        sa.Column("subscription", sa.Text, nullable=False),
        sa.Column("gkey", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("subscription", "gkey", "fingerprint"),
    )
