"""Booking links: a token may be bound to one office and its compounds, and a booking keeps the
office that made it, so that a link sees and cancels its own office's bookings only.

`api_token.binding` is JSON (`{"office": ..., "compounds": [...]}`) for a `book` token, NULL for
the others; `booking.office` is NULL for a booking an unbound token made.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.add_column("api_token", sa.Column("binding", sa.Text, nullable=True))
    op.add_column("booking", sa.Column("office", sa.Text, nullable=True))
    op.create_index("booking_office", "booking", ["office"])
