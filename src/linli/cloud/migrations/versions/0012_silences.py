"""Silences (issue 35): alerts matching a silence's matchers are not told from its start to its
end; kept in the notifier's state, so that one made on any replica holds on all of them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    op.create_table(
        "silence",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("body", sa.Text, nullable=False),  # the silence as JSON
        sa.Column("ends_s", sa.Float, nullable=False),
    )
    op.create_index("silence_by_end", "silence", ["ends_s"])
