"""Waste services that split the routes between them, and the trips they follow.

- `waste_member`: each service's heartbeat; a service silent past `until` is gone.
- `waste_route`: which service follows a route, until when (a lease it renews).
- `waste_message`: the truck messages and dispatcher commands a route's follower took, so
  that the service taking the route over replays the trips under way from their start.
- `waste_trip` and `waste_trip_stop`: each trip followed, its stops and their predicted
  arrivals, as its follower last saw them: any service answers for every trip.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "waste_member",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("until_s", sa.Float, nullable=False),
    )
    op.create_table(
        "waste_route",
        sa.Column("route", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("until_s", sa.Float, nullable=False),
    )
    op.create_table(
        "waste_message",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("truck", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        # Two followers of a route during a handover store its messages once.
        sa.UniqueConstraint("route", "ts_ms", "truck", "kind", name="waste_message_once"),
    )
    op.create_table(
        "waste_trip",
        sa.Column("trip_id", sa.Text, primary_key=True),
        sa.Column("day", sa.Text, primary_key=True),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("truck", sa.Text, nullable=False),
        sa.Column("waste_type", sa.Text, nullable=False),
        sa.Column("next_idx", sa.Integer, nullable=True),
        sa.Column("progress_m", sa.Float, nullable=False),
        sa.Column("finished", sa.Boolean, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "waste_trip_stop",
        sa.Column("trip_id", sa.Text, primary_key=True),
        sa.Column("day", sa.Text, primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("stop_id", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("scheduled_ms", sa.BigInteger, nullable=False),
        sa.Column("predicted_ms", sa.BigInteger, nullable=True),
    )
    op.create_index("waste_message_by_time", "waste_message", ["ts_ms"])
