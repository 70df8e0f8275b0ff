"""The notifier's state: subscriptions, the alert book, failed deliveries (see `linli.cloud.db`).

A row that no longer reads back as what it should be (written by an older version, or
edited by hand) is moved to the `quarantine` table with the reason, for an operator to
see; it costs that one alert or subscription, never the notifier.

Notifiers of one shared-subscription group that share this state share the alert book: a
firing event and its resolution may reach different notifiers, and each message is
claimed by one of them in one statement (a row inserted, or updated or deleted under a
condition), so nobody hears of anything twice. On PostgreSQL they may run on any host.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, text

from linli.catalog.errors import validation_reason
from linli.cloud.config import Subscription
from linli.cloud.db import Tables

# How much of a quarantined row is kept.
QUARANTINE_EXCERPT = 65_536


class Store(Tables):
    """The notifier's alert book, subscriptions, claims and failures, on SQLite or PostgreSQL."""

    # --- the alert book -------------------------------------------------------

    def open_alert(self, fp: str, body: str, now: float) -> bool:
        """Record a firing alert (or refresh its last event); True if it is new."""
        with self._engine.begin() as conn:
            new = conn.execute(
                text(
                    "INSERT INTO alert (fingerprint, body, first_s) VALUES (:fp, :body, :now) "
                    "ON CONFLICT (fingerprint) DO NOTHING"
                ),
                {"fp": fp, "body": body, "now": now},
            ).rowcount
            if new == 0:
                conn.execute(
                    text("UPDATE alert SET body = :body WHERE fingerprint = :fp"), {"fp": fp, "body": body}
                )
        return new == 1

    def close_alert(self, fp: str) -> list[str] | None:
        """Remove a resolved alert; the subscriptions that heard of it, or None if it was not open.

        Of several notifiers closing it at once, one deletes the row and gets the list."""
        with self._engine.begin() as conn:
            gone = conn.execute(text("DELETE FROM alert WHERE fingerprint = :fp"), {"fp": fp}).rowcount
            told = conn.execute(
                text("DELETE FROM told WHERE fingerprint = :fp RETURNING subscription"), {"fp": fp}
            ).all()
            conn.execute(text("DELETE FROM escalated WHERE fingerprint = :fp"), {"fp": fp})
        return sorted(str(s) for (s,) in told) if gone else None

    def alerts(self) -> list[tuple[str, str, float, str | None]]:
        """(fingerprint, body, first seen, acknowledged by) of every open alert, oldest first."""
        rows = self._rows("SELECT fingerprint, body, first_s, acked_by FROM alert ORDER BY first_s")
        return [
            (str(fp), str(body), float(first), None if by is None else str(by))
            for fp, body, first, by in rows
        ]

    def told(self, fp: str) -> dict[str, float]:
        rows = self._rows("SELECT subscription, last_s FROM told WHERE fingerprint = :fp", {"fp": fp})
        return {str(sub): float(last) for sub, last in rows}

    def ack(self, fp: str, by: str, now: float) -> str | None:
        """Acknowledge an open alert (the first acknowledgement stands); who did, or None."""
        with self._engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE alert SET acked_by = :by, acked_s = :now "
                    "WHERE fingerprint = :fp AND acked_by IS NULL"
                ),
                {"by": by, "now": now, "fp": fp},
            )
            row = conn.execute(text("SELECT acked_by FROM alert WHERE fingerprint = :fp"), {"fp": fp}).first()
        return None if row is None else str(row[0])

    def claim_first(self, fp: str, sub: str, now: float) -> bool:
        """True for exactly one caller: the one that tells `sub` of the alert first."""
        return (
            self._change(
                "INSERT INTO told (fingerprint, subscription, last_s) VALUES (:fp, :sub, :now) "
                "ON CONFLICT (fingerprint, subscription) DO NOTHING",
                {"fp": fp, "sub": sub, "now": now},
            )
            == 1
        )

    def claim_repeat(self, fp: str, sub: str, now: float, every: float) -> bool:
        """True for exactly one caller, once `every` seconds passed since `sub` last heard."""
        return (
            self._change(
                "UPDATE told SET last_s = :now WHERE fingerprint = :fp AND subscription = :sub "
                "AND last_s <= :due "
                "AND EXISTS (SELECT 1 FROM alert WHERE fingerprint = :fp AND acked_by IS NULL)",
                {"now": now, "fp": fp, "sub": sub, "due": now - every},
            )
            == 1
        )

    def claim_escalation(self, fp: str, sub: str) -> bool:
        return (
            self._change(
                "INSERT INTO escalated (fingerprint, subscription) VALUES (:fp, :sub) "
                "ON CONFLICT (fingerprint, subscription) DO NOTHING",
                {"fp": fp, "sub": sub},
            )
            == 1
        )

    # --- subscriptions ----------------------------------------------------------

    def quarantine_alert(self, fp: str, reason: str) -> None:
        """Take an alert that cannot be read back out of the book, keeping it with the reason."""
        with self._engine.begin() as conn:
            row = conn.execute(text("SELECT body FROM alert WHERE fingerprint = :fp"), {"fp": fp}).first()
            if row is not None:
                _quarantine(conn, "alert", fp, reason, str(row[0]))
            for table in ("alert", "told", "escalated"):
                conn.execute(text(f"DELETE FROM {table} WHERE fingerprint = :fp"), {"fp": fp})  # noqa: S608

    def quarantined(self) -> list[dict[str, Any]]:
        """Rows taken out of the state because they no longer read back, newest first."""
        return self._dicts(
            "SELECT at_ms, source, key, reason, body FROM quarantine ORDER BY id DESC LIMIT 1000"
        )

    def subscriptions(self) -> list[Subscription]:
        """Every subscription; one that no longer validates is quarantined, not fatal."""
        rows = self._rows("SELECT id, body FROM subscription ORDER BY id")
        subs = []
        for sub_id, body in rows:
            try:
                subs.append(Subscription.model_validate_json(body))
            except ValidationError as exc:
                with self._engine.begin() as conn:
                    _quarantine(conn, "subscription", str(sub_id), validation_reason(exc), str(body))
                    conn.execute(text("DELETE FROM subscription WHERE id = :id"), {"id": sub_id})
        return subs

    def put_subscription(self, sub: Subscription) -> None:
        self._change(
            "INSERT INTO subscription (id, body) VALUES (:id, :body) "
            "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            {"id": sub.id, "body": sub.model_dump_json()},
        )

    def delete_subscription(self, sub_id: str) -> bool:
        return self._change("DELETE FROM subscription WHERE id = :id", {"id": sub_id}) > 0

    def seed(self, subs: Sequence[Subscription]) -> None:
        """The config's subscriptions, where the API has not changed them."""
        with self._engine.begin() as conn:
            for sub in subs:
                conn.execute(
                    text(
                        "INSERT INTO subscription (id, body) VALUES (:id, :body) ON CONFLICT (id) DO NOTHING"
                    ),
                    {"id": sub.id, "body": sub.model_dump_json()},
                )

    def record_failure(
        self, at_ms: int, subscription: str, channel: str, notice: dict[str, Any], error: str
    ) -> None:
        """A delivery that kept failing: kept, with what it would have said, for an operator."""
        self._change(
            "INSERT INTO failed_delivery (at_ms, subscription, channel, fingerprint, notice, error, message) "
            "VALUES (:at_ms, :subscription, :channel, :fingerprint, :notice, :error, :message)",
            {
                "at_ms": at_ms,
                "subscription": subscription,
                "channel": channel,
                "fingerprint": notice["alert"]["fingerprint"],
                "notice": notice["notice"],
                "error": error,
                "message": json.dumps(notice),
            },
        )

    def failures(self) -> list[dict[str, Any]]:
        return self._dicts(
            "SELECT at_ms, subscription, channel, fingerprint, notice, error FROM failed_delivery ORDER BY id"
        )


def _quarantine(conn: Connection, source: str, key: str, reason: str, body: str) -> None:
    conn.execute(
        text(
            "INSERT INTO quarantine (at_ms, source, key, reason, body) "
            "VALUES (:at_ms, :source, :key, :reason, :body)"
        ),
        {
            "at_ms": int(time.time() * 1000),
            "source": source,
            "key": key,
            "reason": reason[:2000],
            "body": body[:QUARANTINE_EXCERPT],
        },
    )
