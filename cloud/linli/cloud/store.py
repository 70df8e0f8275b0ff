"""The notifier's state on disk (SQLite): subscriptions, acknowledgements, failed deliveries."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from linli.cloud.config import Subscription

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscription (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS failed_delivery (
    at_ms INTEGER NOT NULL, subscription TEXT NOT NULL, channel TEXT NOT NULL,
    fingerprint TEXT NOT NULL, notice TEXT NOT NULL, error TEXT NOT NULL, message TEXT NOT NULL
);
"""


class Store:
    """One SQLite file; safe to use from the API's threads and the event loop."""

    def __init__(self, path: Path | str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.executescript(SCHEMA)

    def subscriptions(self) -> list[Subscription]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM subscription ORDER BY id").fetchall()
        return [Subscription.model_validate_json(body) for (body,) in rows]

    def put_subscription(self, sub: Subscription) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO subscription VALUES (?, ?)", (sub.id, sub.model_dump_json())
            )

    def delete_subscription(self, sub_id: str) -> bool:
        with self._lock, self._db:
            return self._db.execute("DELETE FROM subscription WHERE id = ?", (sub_id,)).rowcount > 0

    def seed(self, subs: list[Subscription]) -> None:
        """The config's subscriptions, where the API has not changed them."""
        with self._lock, self._db:
            for sub in subs:
                self._db.execute(
                    "INSERT OR IGNORE INTO subscription VALUES (?, ?)", (sub.id, sub.model_dump_json())
                )

    def record_failure(
        self, at_ms: int, subscription: str, channel: str, notice: dict[str, Any], error: str
    ) -> None:
        """A delivery that kept failing: kept, with what it would have said, for an operator."""
        alert = notice["alert"]
        row = (
            at_ms,
            subscription,
            channel,
            alert["fingerprint"],
            notice["notice"],
            error,
            json.dumps(notice),
        )
        with self._lock, self._db:
            self._db.execute("INSERT INTO failed_delivery VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def failures(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute(
                "SELECT at_ms, subscription, channel, fingerprint, notice, error FROM failed_delivery"
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()
