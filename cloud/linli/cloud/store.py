"""The notifier's state on disk (SQLite): subscriptions, the alert book, failed deliveries.

A row that no longer reads back as what it should be (written by an older version, or
edited by hand) is moved to the `quarantine` table with the reason, for an operator to
see; it costs that one alert or subscription, never the notifier.

Notifiers of one shared-subscription group that share this file share the alert book: a
firing event and its resolution may reach different notifiers, and each message is
claimed by one of them in a transaction (a row inserted, or updated under a condition),
so nobody hears of anything twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from linli.catalog.errors import validation_reason
from linli.cloud.config import Subscription

# How much of a quarantined row is kept.
QUARANTINE_EXCERPT = 65_536

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscription (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alert (
    fingerprint TEXT PRIMARY KEY, body TEXT NOT NULL, first_s REAL NOT NULL,
    acked_by TEXT, acked_s REAL
);
CREATE TABLE IF NOT EXISTS told (
    fingerprint TEXT NOT NULL, subscription TEXT NOT NULL, last_s REAL NOT NULL,
    PRIMARY KEY (fingerprint, subscription)
);
CREATE TABLE IF NOT EXISTS escalated (
    fingerprint TEXT NOT NULL, subscription TEXT NOT NULL, PRIMARY KEY (fingerprint, subscription)
);
CREATE TABLE IF NOT EXISTS quarantine (
    at_ms INTEGER NOT NULL, source TEXT NOT NULL, key TEXT NOT NULL, reason TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS failed_delivery (
    at_ms INTEGER NOT NULL, subscription TEXT NOT NULL, channel TEXT NOT NULL,
    fingerprint TEXT NOT NULL, notice TEXT NOT NULL, error TEXT NOT NULL, message TEXT NOT NULL
);
"""


class Store:
    """One SQLite file; safe to use from the API's threads and the event loop."""

    def __init__(self, path: Path | str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each statement its own transaction, BEGIN IMMEDIATE where several must be one.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)

    # --- the alert book -------------------------------------------------------

    def open_alert(self, fp: str, body: str, now: float) -> bool:
        """Record a firing alert (or refresh its last event); True if it is new."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO alert VALUES (?, ?, ?, NULL, NULL)", (fp, body, now)
            )
            if cur.rowcount == 0:
                self._db.execute("UPDATE alert SET body = ? WHERE fingerprint = ?", (body, fp))
            return cur.rowcount == 1

    def close_alert(self, fp: str) -> list[str] | None:
        """Remove a resolved alert; the subscriptions that heard of it, or None if it was not open."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                told = [
                    s
                    for (s,) in self._db.execute("SELECT subscription FROM told WHERE fingerprint = ?", (fp,))
                ]
                gone = self._db.execute("DELETE FROM alert WHERE fingerprint = ?", (fp,)).rowcount
                self._db.execute("DELETE FROM told WHERE fingerprint = ?", (fp,))
                self._db.execute("DELETE FROM escalated WHERE fingerprint = ?", (fp,))
            finally:
                self._db.execute("COMMIT")
        return told if gone else None

    def alerts(self) -> list[tuple[str, str, float, str | None]]:
        """(fingerprint, body, first seen, acknowledged by) of every open alert, oldest first."""
        with self._lock:
            return self._db.execute(
                "SELECT fingerprint, body, first_s, acked_by FROM alert ORDER BY first_s"
            ).fetchall()

    def told(self, fp: str) -> dict[str, float]:
        with self._lock:
            rows = self._db.execute("SELECT subscription, last_s FROM told WHERE fingerprint = ?", (fp,))
            return dict(rows.fetchall())

    def ack(self, fp: str, by: str, now: float) -> str | None:
        """Acknowledge an open alert (the first acknowledgement stands); who did, or None."""
        with self._lock:
            self._db.execute(
                "UPDATE alert SET acked_by = ?, acked_s = ? WHERE fingerprint = ? AND acked_by IS NULL",
                (by, now, fp),
            )
            row = self._db.execute("SELECT acked_by FROM alert WHERE fingerprint = ?", (fp,)).fetchone()
        return None if row is None else str(row[0])

    def claim_first(self, fp: str, sub: str, now: float) -> bool:
        """True for exactly one caller: the one that tells `sub` of the alert first."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO told VALUES (?, ?, ?)", (fp, sub, now))
            return cur.rowcount == 1

    def claim_repeat(self, fp: str, sub: str, now: float, every: float) -> bool:
        """True for exactly one caller, once `every` seconds passed since `sub` last heard."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE told SET last_s = ? WHERE fingerprint = ? AND subscription = ? AND last_s <= ? "
                "AND EXISTS (SELECT 1 FROM alert WHERE fingerprint = ? AND acked_by IS NULL)",
                (now, fp, sub, now - every, fp),
            )
            return cur.rowcount == 1

    def claim_escalation(self, fp: str, sub: str) -> bool:
        with self._lock:
            return self._db.execute("INSERT OR IGNORE INTO escalated VALUES (?, ?)", (fp, sub)).rowcount == 1

    # --- subscriptions ----------------------------------------------------------

    def quarantine_alert(self, fp: str, reason: str) -> None:
        """Take an alert that cannot be read back out of the book, keeping it with the reason."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT body FROM alert WHERE fingerprint = ?", (fp,)).fetchone()
                if row is not None:
                    self._quarantine("alert", fp, reason, str(row[0]))
                for table in ("alert", "told", "escalated"):
                    self._db.execute(f"DELETE FROM {table} WHERE fingerprint = ?", (fp,))  # noqa: S608
            finally:
                self._db.execute("COMMIT")

    def _quarantine(self, source: str, key: str, reason: str, body: str) -> None:
        self._db.execute(
            "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?)",
            (int(time.time() * 1000), source, key, reason[:2000], body[:QUARANTINE_EXCERPT]),
        )

    def quarantined(self) -> list[dict[str, Any]]:
        """Rows taken out of the state because they no longer read back, newest first."""
        with self._lock:
            cur = self._db.execute(
                "SELECT at_ms, source, key, reason, body FROM quarantine ORDER BY rowid DESC LIMIT 1000"
            )
            return rows_of(cur)

    def subscriptions(self) -> list[Subscription]:
        """Every subscription; one that no longer validates is quarantined, not fatal."""
        with self._lock:
            rows = self._db.execute("SELECT id, body FROM subscription ORDER BY id").fetchall()
        subs = []
        for sub_id, body in rows:
            try:
                subs.append(Subscription.model_validate_json(body))
            except ValidationError as exc:
                with self._lock:
                    self._quarantine("subscription", str(sub_id), validation_reason(exc), str(body))
                    self._db.execute("DELETE FROM subscription WHERE id = ?", (sub_id,))
        return subs

    def put_subscription(self, sub: Subscription) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO subscription VALUES (?, ?)", (sub.id, sub.model_dump_json())
            )

    def delete_subscription(self, sub_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM subscription WHERE id = ?", (sub_id,)).rowcount > 0

    def seed(self, subs: list[Subscription]) -> None:
        """The config's subscriptions, where the API has not changed them."""
        with self._lock:
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
        with self._lock:
            self._db.execute("INSERT INTO failed_delivery VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def failures(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute(
                "SELECT at_ms, subscription, channel, fingerprint, notice, error FROM failed_delivery"
            )
            return rows_of(cur)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def rows_of(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """A query's rows as dicts by column name, for the APIs."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
