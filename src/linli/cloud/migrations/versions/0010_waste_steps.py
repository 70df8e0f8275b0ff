"""What the waste service's predictor learned, kept: each stop a trip reached or left, with the
segment's time and the dwell it taught (`linli.cloud.waste.predict.Step`).

A restarted service learns them again (the roads' times by hour, the dwell per bin), and a trip
it resumes under way gets back where its truck has been and its pace, so it predicts, and
corrects its keepers, as the service that stopped would have. One row per trip, day, stop
index and kind of step; services on one state write the same rows, the first one stays.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.create_table(
        "waste_step",
        sa.Column("trip_id", sa.Text, primary_key=True),
        sa.Column("day", sa.Text, primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("state", sa.Text, primary_key=True),  # arrived, left or skipped
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("time_ms", sa.BigInteger, nullable=False),
        sa.Column("from_ms", sa.BigInteger, nullable=True),  # the stop before left, or this one reached
        sa.Column("scheduled_s", sa.Float, nullable=True),  # an arrival's segment in the timetable
        sa.Column("expected_s", sa.Float, nullable=True),  # ... and by the model then
        sa.Column("dwell_bins", sa.Integer, nullable=True),  # a departure's dwell learned, its bins
        sa.Column(
            "plain_s", sa.Float, nullable=True
        ),  # an arrival's segment by the model, before the day's factor
        sa.Column("due_ms", sa.BigInteger, nullable=True),  # the depot left: when it was due
    )
    op.create_index("waste_step_time", "waste_step", ["time_ms"])
