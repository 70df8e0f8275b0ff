"""The notifier's state as it was before migrations: the alert book, subscriptions, claims,
failed deliveries, quarantine, API tokens and the audit log.

A notifier of an earlier release made these tables itself in its SQLite file: each is made
only where it is not there yet, so that such a file is taken over with its data.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def _table(name: str, *columns: sa.Column[object] | sa.PrimaryKeyConstraint) -> None:
    if not sa.inspect(op.get_bind()).has_table(name):
        op.create_table(name, *columns)


def upgrade() -> None:
    text, real, integer = sa.Text, sa.Float, sa.BigInteger
    _table("subscription", sa.Column("id", text, primary_key=True), sa.Column("body", text, nullable=False))
    _table(
        "alert",
        sa.Column("fingerprint", text, primary_key=True),
        sa.Column("body", text, nullable=False),
        sa.Column("first_s", real, nullable=False),
        sa.Column("acked_by", text),
        sa.Column("acked_s", real),
    )
    _table(
        "told",
        sa.Column("fingerprint", text, nullable=False),
        sa.Column("subscription", text, nullable=False),
        sa.Column("last_s", real, nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", "subscription"),
    )
    _table(
        "escalated",
        sa.Column("fingerprint", text, nullable=False),
        sa.Column("subscription", text, nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", "subscription"),
    )
    _table(
        "quarantine",
        sa.Column("at_ms", integer, nullable=False),
        sa.Column("source", text, nullable=False),
        sa.Column("key", text, nullable=False),
        sa.Column("reason", text, nullable=False),
        sa.Column("body", text, nullable=False),
    )
    _table(
        "failed_delivery",
        sa.Column("at_ms", integer, nullable=False),
        sa.Column("subscription", text, nullable=False),
        sa.Column("channel", text, nullable=False),
        sa.Column("fingerprint", text, nullable=False),
        sa.Column("notice", text, nullable=False),
        sa.Column("error", text, nullable=False),
        sa.Column("message", text, nullable=False),
    )
    _table(
        "api_token",
        sa.Column("id", text, primary_key=True),
        sa.Column("name", text, nullable=False, unique=True),
        sa.Column("scope", text, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        sa.Column("created_ms", integer, nullable=False),
        sa.Column("revoked_ms", integer),
    )
    _table(
        "audit",
        sa.Column("at_ms", integer, nullable=False),
        sa.Column("who", text, nullable=False),
        sa.Column("action", text, nullable=False),
        sa.Column("target", text, nullable=False),
        sa.Column("detail", text, nullable=False),
    )
