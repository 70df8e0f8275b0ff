"""Alerts are told by episode: an open alert keeps when its episode began, and closed
episodes are remembered for a day. Each open alert keeps when it next needs looking at.

Edges announce their alerts again now and then, and two notifiers may take a firing event
and its resolution in either order: a firing event of an episode already closed is late,
and a resolution closes only its own episode or an older one. Alerts open before this
revision count as begun at 0, so that any resolution closes them, as before.

A notifier looked at every open alert twice a second; at city scale (tens of thousands open)
that took all its time. `due_s` says when something may next be due for an alert (its first
message, a repeat, an escalation, the end of quiet hours), so that the tick reads only those.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("alert", sa.Column("since_ms", sa.BigInteger, nullable=False, server_default="0"))
    op.add_column("alert", sa.Column("due_s", sa.Float, server_default="0"))  # NULL: nothing due
    op.create_index("alert_by_due", "alert", ["due_s"])
    op.create_table(
        "closed_episode",
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("since_ms", sa.BigInteger, nullable=False),
        sa.Column("closed_s", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", "since_ms"),
    )
    op.create_index("closed_episode_by_age", "closed_episode", ["closed_s"])
