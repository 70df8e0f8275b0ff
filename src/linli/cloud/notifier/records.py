"""The notifier's records beside the alert book: subscriptions, silences, failed deliveries and
quarantined rows (see `linli.cloud.db`).

A row that no longer reads back as what it should be (written by an older version, or
edited by hand) is moved to the `quarantine` table with the reason, for an operator to
see; it costs that one alert or subscription, never the notifier.
"""

import json
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, text

from linli.catalog.errors import validation_reason
from linli.cloud.db import LAST_ID, Tables
from linli.cloud.notifier.config import Silence, Subscription

# How much of a quarantined row is kept.
QUARANTINE_EXCERPT = 65_536
# Subscriptions changed: every alert is looked at again at the next tick.
RESCHEDULE = "UPDATE alert SET due_s = 0"


class Records(Tables):
    """Subscriptions, silences, failed deliveries and quarantined rows, on SQLite or PostgreSQL."""

    # --- silences ---------------------------------------------------------------

    def put_silence(self, silence: Silence) -> None:
        """Keep a silence (every replica reads it), and look at every open alert again: one that
        it no longer holds (expired, ended) may be due."""
        with self._engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO silence (id, body, ends_s) VALUES (:id, :body, :ends) "
                    "ON CONFLICT (id) DO UPDATE SET body = excluded.body, ends_s = excluded.ends_s"
                ),
                {"id": silence.id, "body": silence.model_dump_json(), "ends": silence.ends_s},
            )
            conn.execute(text(RESCHEDULE))

    def delete_silence(self, silence_id: str) -> Silence | None:
        """Forget a silence on every replica, and look at every open alert again (it may be due
        now); the silence as it was, or None if there is none."""
        with self._engine.begin() as conn:
            body = conn.execute(
                text("DELETE FROM silence WHERE id = :id RETURNING body"), {"id": silence_id}
            ).scalar()
            if body is None:
                return None
            conn.execute(text(RESCHEDULE))
        return Silence.model_validate_json(str(body))

    def silences(self, ending_after: float = 0.0) -> list[Silence]:
        """The silences that end after `ending_after`, soonest ending first."""
        rows = self._rows(
            "SELECT body FROM silence WHERE ends_s > :after ORDER BY ends_s, id", {"after": ending_after}
        )
        return [Silence.model_validate_json(str(body)) for (body,) in rows]

    # --- subscriptions ----------------------------------------------------------

    def quarantine_alert(self, fp: str, reason: str) -> None:
        """Take an alert that cannot be read back out of the book, keeping it with the reason."""
        with self._engine.begin() as conn:
            row = conn.execute(text("SELECT body FROM alert WHERE fingerprint = :fp"), {"fp": fp}).first()
            if row is not None:
                _quarantine(conn, "alert", fp, reason, str(row[0]))
            for table in ("alert", "told", "escalated"):
                conn.execute(text(f"DELETE FROM {table} WHERE fingerprint = :fp"), {"fp": fp})  # noqa: S608

    def quarantined(self, before: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Rows taken out of the state because they no longer read back, newest first; those
        before the row `before` (its `id`), for the API's next page."""
        return self._dicts(
            "SELECT id, at_ms, source, key, reason, body FROM quarantine WHERE id < :before "
            "ORDER BY id DESC LIMIT :n",
            {"before": LAST_ID if before is None else before, "n": limit},
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
        with self._engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO subscription (id, body) VALUES (:id, :body) "
                    "ON CONFLICT (id) DO UPDATE SET body = excluded.body"
                ),
                {"id": sub.id, "body": sub.model_dump_json()},
            )
            conn.execute(text(RESCHEDULE))

    def delete_subscription(self, sub_id: str) -> bool:
        with self._engine.begin() as conn:
            gone = conn.execute(text("DELETE FROM subscription WHERE id = :id"), {"id": sub_id}).rowcount
            conn.execute(text(RESCHEDULE))
        return gone > 0

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
            conn.execute(text(RESCHEDULE))

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

    def failures(self, after: int | None = None, limit: int = LAST_ID) -> list[dict[str, Any]]:
        """Deliveries recorded as failed, oldest first; those after the row `after` (its `id`)."""
        return self._dicts(
            "SELECT id, at_ms, subscription, channel, fingerprint, notice, error FROM failed_delivery "
            "WHERE id > :after ORDER BY id LIMIT :n",
            {"after": after or 0, "n": limit},
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
