"""The tonnage rollups in the central state: any waste service answers `GET /rollups`, and the
figures outlive the time-series store's retention.

One row per period (day, ISO week, month; its local start in ms), waste type, compound (the
stop), route and truck; `linli waste rollup --state` recomputes the periods it touches and
replaces their rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "waste_rollup",
        sa.Column("period", sa.Text, primary_key=True),
        sa.Column("start_ms", sa.BigInteger, primary_key=True),
        sa.Column("waste_type", sa.Text, primary_key=True),
        sa.Column("stop", sa.Text, primary_key=True),
        sa.Column("route", sa.Text, primary_key=True),
        sa.Column("truck", sa.Text, primary_key=True),
        sa.Column("lifts", sa.Integer, nullable=False),
        sa.Column("bins", sa.Integer, nullable=False),
        sa.Column("kg", sa.Float, nullable=False),
    )
