"""The waste service's state: keeper notices told, incidents, failed deliveries, the lines
waiting for the store, and renovation bookings with their trail.

A waste service of an earlier release kept these in an SQLite file of its own, made without
migrations; `linli.cloud.waste.state` renames those tables to `legacy_*` before the
migrations run, and this revision moves their rows over (a notice's `seq` numbered in the
order it was told) and drops them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def _id() -> sa.Column[int]:
    return sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )


def upgrade() -> None:
    text, real, integer = sa.Text, sa.Float, sa.BigInteger
    # A notice is claimed by inserting it: the key is the trip's day, its stop (by place), the
    # kind, and the how-many-th of that kind for that stop. Two services following the same
    # trucks make the same notices; the first to insert one sends it.
    op.create_table(
        "waste_notice",
        _id(),
        sa.Column("trip_id", text, nullable=False),
        sa.Column("day", text, nullable=False),
        sa.Column("stop_id", text, nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("kind", text, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("time_ms", integer, nullable=False),
        sa.Column("predicted_ms", integer),
        sa.Column("bins", sa.Integer, nullable=False),
        sa.Column("kg", real, nullable=False),
        sa.UniqueConstraint("trip_id", "day", "idx", "kind", "seq", name="waste_notice_once"),
    )
    op.create_table(
        "waste_incident",
        _id(),
        sa.Column("trip_id", text, nullable=False),
        sa.Column("day", text, nullable=False),
        sa.Column("kind", text, nullable=False),
        sa.Column("stop_id", text, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("time_ms", integer, nullable=False),
        sa.Column("route", text, nullable=False),
        sa.Column("truck", text, nullable=False),
        sa.Column("detail", text, nullable=False),
        sa.Column("acked_ms", integer),
        sa.UniqueConstraint("trip_id", "day", "kind", "stop_id", "seq", name="waste_incident_once"),
    )
    op.create_table(
        "waste_failed_delivery",
        _id(),
        sa.Column("at_ms", integer, nullable=False),
        sa.Column("contact", text, nullable=False),
        sa.Column("channel", text, nullable=False),
        sa.Column("message", text, nullable=False),
        sa.Column("error", text, nullable=False),
    )
    op.create_table("waste_outbox", _id(), sa.Column("line", text, nullable=False))
    bind = op.get_bind()
    if not sa.inspect(bind).has_table("booking"):  # an earlier release's file has it already
        op.create_table(
            "booking",
            sa.Column("id", text, primary_key=True),
            sa.Column("key", text, unique=True),
            sa.Column("compound", text, nullable=False),
            sa.Column("lat", real, nullable=False),
            sa.Column("lon", real, nullable=False),
            sa.Column("m3", real, nullable=False),
            sa.Column("earliest_s", real, nullable=False),
            sa.Column("latest_s", real, nullable=False),
            sa.Column("contact", text, nullable=False),
            sa.Column("note", text, nullable=False),
            sa.Column("state", text, nullable=False),
            sa.Column("truck", text),
            sa.Column("created_s", real, nullable=False),
            sa.Column("collected_kg", real),
        )
        op.create_index("booking_state", "booking", ["state"])
    op.create_table(
        "booking_event",
        _id(),
        sa.Column("booking", text, nullable=False),
        sa.Column("state", text, nullable=False),
        sa.Column("at_s", real, nullable=False),
        sa.Column("by", text, nullable=False),
        sa.Column("truck", text),
        sa.Column("detail", text, nullable=False),
    )
    op.create_index("booking_event_of", "booking_event", ["booking"])
    _adopt(bind)


def _adopt(bind: sa.Connection) -> None:
    """Rows of an earlier release's waste file, in the order they were written."""
    tables = set(sa.inspect(bind).get_table_names())
    if "legacy_notice" in tables:
        op.execute(
            "INSERT INTO waste_notice "
            "(trip_id, day, stop_id, idx, kind, seq, time_ms, predicted_ms, bins, kg) "
            "SELECT trip_id, day, stop_id, idx, kind, "
            "ROW_NUMBER() OVER (PARTITION BY trip_id, day, idx, kind ORDER BY rowid) - 1, "
            "time_ms, predicted_ms, bins, kg FROM legacy_notice ORDER BY rowid"
        )
        op.drop_table("legacy_notice")
    if "legacy_failed_delivery" in tables:
        op.execute(
            "INSERT INTO waste_failed_delivery (at_ms, contact, channel, message, error) "
            "SELECT at_ms, contact, channel, message, error FROM legacy_failed_delivery ORDER BY rowid"
        )
        op.drop_table("legacy_failed_delivery")
    if "legacy_outbox" in tables:
        op.execute("INSERT INTO waste_outbox (id, line) SELECT id, line FROM legacy_outbox ORDER BY id")
        op.drop_table("legacy_outbox")
    if "legacy_booking_event" in tables:
        op.execute(
            'INSERT INTO booking_event (booking, state, at_s, "by", truck, detail) '
            'SELECT booking, state, at_s, "by", truck, detail FROM legacy_booking_event ORDER BY rowid'
        )
        op.drop_table("legacy_booking_event")
