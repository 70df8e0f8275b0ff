"""The notifier's SQLite state commits without an fsync each time (issue 36), and nothing else's."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from linli.cloud.db import open_state
from linli.cloud.notifier.config import NotifierConfig
from linli.cloud.notifier.service import Service
from test_notifier import alert

FULL, NORMAL = 2, 1  # SQLite's PRAGMA synchronous


def pragmas(engine: Engine) -> list[tuple[int, str]]:
    """(synchronous, journal_mode) of two connections out of the pool at once."""
    one, two = engine.raw_connection(), engine.raw_connection()
    try:
        return [
            (c.execute("PRAGMA synchronous").fetchone()[0], c.execute("PRAGMA journal_mode").fetchone()[0])
            for c in (one, two)
        ]
    finally:
        one.close()
        two.close()


def test_the_running_notifiers_sqlite_state_commits_without_an_fsync_and_keeps_what_it_committed(
    tmp_path: Path,
) -> None:
    state = tmp_path / "notifier.sqlite"
    service = Service(NotifierConfig(state=str(state)), "token")
    try:
        # Every connection, the first (the migration's, made before) included: WAL, no fsync a commit.
        assert pragmas(service.store.engine) == [(NORMAL, "wal"), (NORMAL, "wal")]
        assert service.notifier.handle(alert())
    finally:
        service.store.close()
    # What it committed is there for the next start.
    again = open_state(state)
    try:
        with again.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alert")).scalar_one() == 1
        # Another state opened on its own (the waste service's) keeps an fsync at each commit.
        assert pragmas(again) == [(FULL, "wal"), (FULL, "wal")]
    finally:
        again.dispose()
