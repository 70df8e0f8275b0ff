"""The logs (audit, quarantine, failed deliveries) get an id that says their order.

They were read newest first by SQLite's hidden rowid, which PostgreSQL does not have. Each
table is copied into one with an id, in the order its rows were written.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"

COLUMNS = {
    "audit": "at_ms BIGINT NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, "
    "detail TEXT NOT NULL",
    "quarantine": "at_ms BIGINT NOT NULL, source TEXT NOT NULL, key TEXT NOT NULL, reason TEXT NOT NULL, "
    "body TEXT NOT NULL",
    "failed_delivery": "at_ms BIGINT NOT NULL, subscription TEXT NOT NULL, channel TEXT NOT NULL, "
    "fingerprint TEXT NOT NULL, notice TEXT NOT NULL, error TEXT NOT NULL, message TEXT NOT NULL",
}


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    key = "id INTEGER PRIMARY KEY AUTOINCREMENT" if sqlite else "id BIGSERIAL PRIMARY KEY"
    written = "rowid" if sqlite else "ctid"  # the order rows were written in, near enough for ctid
    for table, columns in COLUMNS.items():
        names = ", ".join(c.split()[0] for c in columns.split(", "))
        op.execute(f"CREATE TABLE {table}_new ({key}, {columns})")
        op.execute(f"INSERT INTO {table}_new ({names}) SELECT {names} FROM {table} ORDER BY {written}")  # noqa: S608
        op.execute(f"DROP TABLE {table}")
        op.execute(f"ALTER TABLE {table}_new RENAME TO {table}")
