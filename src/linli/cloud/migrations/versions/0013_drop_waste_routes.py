"""The `split` routes mode retired: its leases, heartbeats and route log dropped.

`waste_member`, `waste_route` and `waste_message` were the state of services sharing the routes
out (0007). Every service now follows every route; `waste_trip` and `waste_trip_stop`, from
the same migration, stay: a restarted service reads from them which trips finished.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    op.drop_index("waste_message_by_time", table_name="waste_message")
    for table in ("waste_message", "waste_route", "waste_member"):
        op.drop_table(table)
