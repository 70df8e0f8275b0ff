"""What the PostgreSQL race tests share: a call in a thread of its own, and
waiting until the racing transactions block on a lock (`pg_stat_activity`, never a sleep).

A third connection holds a row lock (or an uncommitted row) that the racing transactions must
wait for, so that each side runs up to that lock; releasing it lets them go on at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text

from support import wait_for


def waiting(engine: Engine) -> int:
    """Backends of this database waiting for a lock (a row, an advisory lock, a transaction)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


class Call(threading.Thread):
    """`fn()` in a thread of its own, its result or exception kept."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the test, whatever it is
            self.error = exc

    def outcome(self) -> Any:
        self.join(30)
        assert not self.is_alive(), "still blocked after its lock was released"
        if self.error is not None:
            raise self.error
        return self.result


def blocked_or_done(engine: Engine, calls: list[Call], waiters: int) -> None:
    """Wait until each call either finished or waits on a lock (`waiters` in all are waiting)."""
    wait_for(
        lambda: waiting(engine) + sum(not c.is_alive() for c in calls) >= waiters,
        "the racing transactions to block or finish",
    )
