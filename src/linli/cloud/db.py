"""The central services' state: an SQLite file on one box, PostgreSQL for several hosts.

One schema for both, made and upgraded by Alembic (the revisions in `migrations/`) when a
service opens its state; services starting together on PostgreSQL take turns (an advisory
lock). `state` is a file path, or a database URL: `postgresql://user@host:port/database`, the
password in the URL or in `$PGPASSWORD`.

Claims (who tells whom, who closes an alert) are single statements that only one caller can
win: an insert that does nothing on conflict, an update or delete under a condition. On
SQLite every transaction takes the write lock at its start (`BEGIN IMMEDIATE`), so that a
read-then-write never deadlocks another process; PostgreSQL's row locks do the same there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, TextClause, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
# Past any row's id (and more rows than any table holds): "all" for a keyset page's bounds.
LAST_ID = 2**63 - 1
# A database cut off by the network fails a statement in seconds rather than TCP's quarter of
# an hour: a connect waits 3 s, data unacknowledged for 3 s breaks the connection (the
# service then holds its events and tries again), and keepalives find a silent peer.
PG_TIMEOUTS = {
    "connect_timeout": 3,
    "tcp_user_timeout": 3000,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
}
# Any fixed number: the advisory lock the migrations of every linli service take on PostgreSQL.
MIGRATION_LOCK = 0x6C696E6C69


def database_url(state: str | Path) -> str:
    """The SQLAlchemy URL of a state: a file path is SQLite, a postgresql:// URL uses psycopg."""
    text_ = str(state)
    if "://" not in text_:
        return f"sqlite:///{Path(text_)}"
    if text_.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + text_.split("://", 1)[1]
    return text_


def unreachable(exc: BaseException) -> bool:
    """The state cannot be reached now (down, restarting, cut off, its connection dropped, a
    lock or a serialisation that lost): trying again is right. Anything else, a constraint
    violated or a statement the database refuses, is a bug that trying again does not mend.
    A pool with no connection free within its timeout is the same outage seen from here."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def is_url(state: str | Path) -> bool:
    return "://" in str(state)


def describe(state: str | Path) -> str:
    """The state as an error message may show it: a URL without its password."""
    return make_url(database_url(state)).render_as_string(hide_password=True) if is_url(state) else str(state)


def open_state(state: str | Path | Engine) -> Engine:
    """An engine on the state, its schema at the newest revision."""
    if isinstance(state, Engine):
        return state
    url = database_url(state)
    if url.startswith("sqlite"):
        Path(str(state)).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        # No ping before each use (a round trip per statement): a connection the database
        # dropped (a restart) fails its statement, SQLAlchemy then replaces the whole pool, and
        # the service holds what failed and tries it again.
        engine = create_engine(url, pool_size=5, max_overflow=10, connect_args=dict(PG_TIMEOUTS))
    migrate(engine)
    return engine


class Tables:
    """A service's tables on its state; each helper runs one statement in its own transaction,
    safe from the API's threads and the event loop alike."""

    def __init__(self, state: str | Path | Engine) -> None:
        self._engine = open_state(state)
        # One statement is atomic on its own: on PostgreSQL it goes without BEGIN and COMMIT,
        # one round trip rather than three. SQLite's transactions take its write lock.
        self._single = (
            self._engine.execution_options(isolation_level="AUTOCOMMIT")
            if self._engine.dialect.name == "postgresql"
            else self._engine
        )

    @property
    def engine(self) -> Engine:
        """For a transaction of several statements: `with tables.engine.begin() as conn`."""
        return self._engine

    def rows(self, sql: str | TextClause, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """One statement's rows."""
        return self._rows(sql, params)

    def _rows(self, sql: str | TextClause, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._single.begin() as conn:
            return [tuple(row) for row in conn.execute(_text(sql), params or {})]

    def _dicts(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts by column name, for the APIs."""
        with self._single.begin() as conn:
            return [dict(row) for row in conn.execute(text(sql), params or {}).mappings()]

    def _change(self, sql: str | TextClause, params: Mapping[str, Any] | None = None) -> int:
        """Run one statement; the rows it inserted, updated or deleted."""
        with self._single.begin() as conn:
            return conn.execute(_text(sql), params or {}).rowcount

    def _take_expired(
        self, table: str, columns: str, now: float, lease_until: float, limit: int
    ) -> list[tuple[Any, ...]]:
        """(id, *columns) of the rows of `table` whose `lease_s` ran out, each now leased to the
        caller until `lease_until`: an outbox whose sender died. No other caller gets them."""
        with self._single.begin() as conn:
            # PostgreSQL: rows another caller is taking are skipped, not waited for. SQLite's
            # transaction holds the database's write lock already.
            lock = " FOR UPDATE SKIP LOCKED" if conn.dialect.name == "postgresql" else ""
            sql = (  # the table and columns are the caller's constants; the values are bound
                f"UPDATE {table} SET lease_s = :until WHERE id IN "  # noqa: S608
                f"(SELECT id FROM {table} WHERE lease_s < :now ORDER BY id LIMIT :limit{lock}) "
                f"RETURNING id, {columns}"
            )
            rows = conn.execute(text(sql), {"now": now, "until": lease_until, "limit": limit}).all()
        return sorted(tuple(row) for row in rows)

    def _renew(self, table: str, ids: list[int], lease_until: float) -> None:
        """Extend the leases of the rows `ids` of `table` to `lease_until`: still being sent by
        their holder, which is alive."""
        if not ids:
            return
        with self._single.begin() as conn:
            conn.execute(
                text(f"UPDATE {table} SET lease_s = :until WHERE id = :id"),  # noqa: S608 - a constant
                [{"id": held, "until": lease_until} for held in ids],
            )

    def close(self) -> None:
        self._engine.dispose()


def _text(sql: str | TextClause) -> TextClause:
    return text(sql) if isinstance(sql, str) else sql


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = conn
        before = MigrationContext.configure(conn).get_current_revision()
        command.upgrade(config, revision)
        after = MigrationContext.configure(conn).get_current_revision()
    if after != before:
        log.info("state schema upgraded from %s to %s", before or "empty", after)


def _sqlite_connect(dbapi_connection: Any, _record: object) -> None:
    # The driver's own transaction handling off: SQLAlchemy's "begin" event says BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")
