"""The notifier's state: the alert book, its claims and the outbox (see `linli.cloud.db`), on
the records of `records` (subscriptions, silences, failed deliveries, quarantined rows).

Notifiers of one shared-subscription group that share this state share the alert book: a
firing event and its resolution may reach different notifiers, and each message is
claimed by one of them in one statement (a row inserted, or updated or deleted under a
condition), so nobody hears of anything twice. On PostgreSQL they may run on any host.
The claim's transaction also puts the message in the outbox (`Keep`): a database failing
after it cannot leave a claim won and its message never sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from sqlalchemy import Connection, text

from linli.cloud.notifier.records import RESCHEDULE, Records

# How long a closed episode is remembered: longer than any event can be late.
EPISODES_KEPT_S = 86_400.0

Opened = Literal["new", "open", "late"]
# An open alert: fingerprint, body, first seen, acknowledged by, and subscription -> last told.
Entry = tuple[str, str, float, str | None, dict[str, float]]
BOOK = (
    "SELECT a.fingerprint, a.body, a.first_s, a.acked_by, t.subscription, t.last_s "
    "FROM alert a LEFT JOIN told t ON t.fingerprint = a.fingerprint "
    "ORDER BY a.first_s, a.fingerprint"
)
BOOK_DUE = (
    "SELECT a.fingerprint, a.body, a.first_s, a.acked_by, t.subscription, t.last_s "
    "FROM alert a LEFT JOIN told t ON t.fingerprint = a.fingerprint WHERE a.fingerprint IN "
    "(SELECT fingerprint FROM alert WHERE due_s <= :due ORDER BY due_s LIMIT :limit) "
    "ORDER BY a.first_s, a.fingerprint"
)
BOOK_ONE = (
    "SELECT a.fingerprint, a.body, a.first_s, a.acked_by, t.subscription, t.last_s "
    "FROM alert a LEFT JOIN told t ON t.fingerprint = a.fingerprint WHERE a.fingerprint = :fp"
)
REFRESH = text("UPDATE alert SET body = :body WHERE fingerprint = :fp AND since_ms = :since")


@dataclass(frozen=True)
class Keep:
    """Notices a claim keeps in the outbox in its own transaction, each until it is sent: a
    database failing right after the claim then cannot leave it won with its notices lost."""

    notices: Sequence[tuple[str, str, str]]  # (subscription, channel as JSON, notice as JSON)
    lease_until: float  # until then nobody else sends them (`orphans`)


NOTHING = Keep((), 0.0)


@dataclass(frozen=True)
class Pending:
    """A resolution kept for the next message of each (subscription, group) that heard of the
    alert; each such group is due now (the notifier tells it, or says when it may)."""

    groups: Sequence[tuple[str, str]]
    body: str


class Claimed(NamedTuple):
    """A group's message claimed: the outbox ids of what was kept, the members still open (now
    told), and the bodies of the resolved alerts it tells."""

    held: list[int]
    firing: list[str]
    resolved: list[str]


class Closed(NamedTuple):
    """An alert closed: the subscriptions that heard of it, and the outbox ids of what was kept."""

    told: list[str]
    held: list[int]


class Store(Records):
    """The notifier's alert book, subscriptions, claims and failures, on SQLite or PostgreSQL."""

    # --- the alert book -------------------------------------------------------

    def open_alert(self, fp: str, since_ms: int, body: str, now: float, due: float | None = None) -> Opened:
        """Record a firing event: a new alert, a refresh of an open one (its last event, the
        newest episode), or nothing when its episode was closed already (a late event). A new
        alert is due to be looked at `due` (by default now)."""
        params = {"fp": fp, "since": since_ms, "body": body, "now": now, "due": now if due is None else due}
        # Most firing events are an open episode announced again: one statement. The row's lock
        # orders it with a resolution closing the episode at the same moment.
        if self._change(REFRESH, params) == 1:
            return "open"
        with self._engine.begin() as conn:
            _lock_alert(conn, fp)
            late = conn.execute(
                text("SELECT 1 FROM closed_episode WHERE fingerprint = :fp AND since_ms = :since"), params
            ).first()
            if late is not None:
                return "late"
            new = conn.execute(
                text(
                    "INSERT INTO alert (fingerprint, since_ms, body, first_s, due_s) "
                    "VALUES (:fp, :since, :body, :now, :due) ON CONFLICT (fingerprint) DO NOTHING"
                ),
                params,
            ).rowcount
            if new == 0:
                conn.execute(
                    text(
                        "UPDATE alert SET body = :body, since_ms = :since "
                        "WHERE fingerprint = :fp AND since_ms <= :since"
                    ),
                    params,
                )
        return "new" if new == 1 else "open"

    def close_alert(
        self,
        fp: str,
        since_ms: int,
        now: float,
        keep: Callable[[list[str]], Keep] | None = None,
        pending: Callable[[list[str]], Pending] | None = None,
    ) -> Closed | None:
        """Close an alert's episode (or an older one still open): the subscriptions that heard
        of it, with what `keep(them)` gave to the outbox and `pending(them)` kept for their
        groups' next messages; None if it was not open. The episode
        is remembered for a day, so that its firing event arriving late does not open it again.

        Of several notifiers closing it at once, one deletes the row and gets the list."""
        with self._engine.begin() as conn:
            _lock_alert(conn, fp)
            gone = conn.execute(
                text("DELETE FROM alert WHERE fingerprint = :fp AND since_ms <= :since"),
                {"fp": fp, "since": since_ms},
            ).rowcount
            closed: Closed | None = None
            if gone:
                rows = conn.execute(
                    text("DELETE FROM told WHERE fingerprint = :fp RETURNING subscription"), {"fp": fp}
                )
                told = sorted(str(sub) for (sub,) in rows)
                conn.execute(text("DELETE FROM escalated WHERE fingerprint = :fp"), {"fp": fp})
                closed = Closed(told, _hold(conn, NOTHING if keep is None else keep(told)))
                if pending is not None:
                    _pend(conn, fp, pending(told), now)
            conn.execute(
                text(
                    "INSERT INTO closed_episode (fingerprint, since_ms, closed_s) VALUES (:fp, :since, :now) "
                    "ON CONFLICT DO NOTHING"
                ),
                {"fp": fp, "since": since_ms, "now": now},
            )
            conn.execute(
                text("DELETE FROM closed_episode WHERE closed_s < :old"), {"old": now - EPISODES_KEPT_S}
            )
        return closed

    def book(self, due_by: float | None = None, limit: int = 2**31 - 1) -> list[Entry]:
        """Every open alert, oldest first, with who heard of it when; or the `limit` most
        overdue by `due_by`."""
        return self._book(self._rows(BOOK if due_by is None else BOOK_DUE, {"due": due_by, "limit": limit}))

    def entry(self, fp: str) -> Entry | None:
        """One open alert, with who heard of it when; None if it is not open."""
        return next(iter(self._book(self._rows(BOOK_ONE, {"fp": fp}))), None)

    @staticmethod
    def _book(rows: list[tuple[Any, ...]]) -> list[Entry]:
        book: dict[str, Entry] = {}
        for fp, body, first, by, sub, last in rows:
            entry = book.setdefault(
                str(fp), (str(fp), str(body), float(first), None if by is None else str(by), {})
            )
            if sub is not None:
                entry[4][str(sub)] = float(last)
        return list(book.values())

    def look_again(self) -> None:
        """Every open alert is looked at again at the next tick (an inhibiting alert resolved)."""
        self._change(RESCHEDULE, {})

    def set_due(self, fp: str, due: float | None) -> None:
        """When the alert next needs looking at; None: not until something changes."""
        self._change("UPDATE alert SET due_s = :due WHERE fingerprint = :fp", {"fp": fp, "due": due})

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

    def claim_first(self, fp: str, sub: str, now: float, keep: Keep = NOTHING) -> list[int] | None:
        """For exactly one caller, the one that tells `sub` of the alert first while it is open:
        the outbox ids of what it keeps. None for the others."""
        return self._claim(
            fp,
            "INSERT INTO told (fingerprint, subscription, last_s) SELECT :fp, :sub, :now "
            "WHERE EXISTS (SELECT 1 FROM alert WHERE fingerprint = :fp) "
            "ON CONFLICT (fingerprint, subscription) DO NOTHING",
            {"fp": fp, "sub": sub, "now": now},
            keep,
        )

    def claim_repeat(
        self, fp: str, sub: str, now: float, every: float, keep: Keep = NOTHING
    ) -> list[int] | None:
        """For exactly one caller, once `every` seconds passed since `sub` last heard: the outbox
        ids of what it keeps. None for the others."""
        return self._claim(
            fp,
            "UPDATE told SET last_s = :now WHERE fingerprint = :fp AND subscription = :sub "
            "AND last_s <= :due "
            "AND EXISTS (SELECT 1 FROM alert WHERE fingerprint = :fp AND acked_by IS NULL)",
            {"now": now, "fp": fp, "sub": sub, "due": now - every},
            keep,
        )

    def claim_escalation(self, fp: str, sub: str, keep: Keep = NOTHING) -> list[int] | None:
        return self._claim(
            fp,
            "INSERT INTO escalated (fingerprint, subscription) SELECT :fp, :sub "
            "WHERE EXISTS (SELECT 1 FROM alert WHERE fingerprint = :fp) "
            "ON CONFLICT (fingerprint, subscription) DO NOTHING",
            {"fp": fp, "sub": sub},
            keep,
        )

    def _claim(self, fp: str, sql: str, params: dict[str, Any], keep: Keep) -> list[int] | None:
        """One claim on an open alert, in turn with its events: a notifier that read the alert
        as open just before another closed it must not tell it after its resolution. The
        winner's notices go to the outbox in the same transaction."""
        with self._engine.begin() as conn:
            _lock_alert(conn, fp)
            if conn.execute(text(sql), params).rowcount != 1:
                return None
            return _hold(conn, keep)

    # --- groups -----------------------------------------------------------------

    def group_told(self, sub: str, key: str) -> float | None:
        """When the group was last told to `sub`; None if never."""
        rows = self._rows(
            "SELECT last_s FROM alert_group WHERE subscription = :sub AND gkey = :key",
            {"sub": sub, "key": key},
        )
        return float(rows[0][0]) if rows else None

    def groups_due(self, now: float, limit: int) -> list[tuple[str, str, int]]:
        """(subscription, group, resolutions kept so far) of the groups whose resolved alerts
        wait to be told and may be by now."""
        rows = self._rows(
            "SELECT subscription, gkey, changes FROM alert_group WHERE due_s <= :now "
            "ORDER BY due_s LIMIT :limit",
            {"now": now, "limit": limit},
        )
        return [(str(sub), str(key), int(changes)) for sub, key, changes in rows]

    def tell_later(self, sub: str, key: str, gap: float, changes: int) -> None:
        """A group with a change waiting is due `gap` after it was last told, unless it was
        told since or another resolution came after `changes` (which makes it due again)."""
        self._change(
            "UPDATE alert_group SET due_s = last_s + :gap "
            "WHERE subscription = :sub AND gkey = :key AND due_s IS NOT NULL AND changes = :changes",
            {"sub": sub, "key": key, "gap": gap, "changes": changes},
        )

    def claim_group(
        self,
        sub: str,
        key: str,
        now: float,
        ready: float,
        *,
        members: Sequence[str],
        keep: Callable[[list[str], list[str]], Keep],
    ) -> Claimed | None:
        """For exactly one caller, when the group was last told to `sub` by `ready` (or never):
        tell it now. The `members` still open are marked told, the resolved alerts kept for the
        group are taken, and `keep(firing, resolved)` goes to the outbox, all in one transaction.
        None for the others."""
        with self._engine.begin() as conn:
            _lock_alert(conn, f"group\n{sub}\n{key}")
            won = conn.execute(
                text(
                    "INSERT INTO alert_group (subscription, gkey, last_s, due_s) "
                    "VALUES (:sub, :key, :now, NULL) "
                    "ON CONFLICT (subscription, gkey) DO UPDATE SET last_s = :now, due_s = NULL "
                    "WHERE alert_group.last_s <= :ready"
                ),
                {"sub": sub, "key": key, "now": now, "ready": ready},
            ).rowcount
            if won != 1:
                return None
            firing = []
            for fp in sorted(members):  # in one order: two claims never wait for each other's locks
                _lock_alert(conn, fp)
                told = conn.execute(
                    text(
                        "INSERT INTO told (fingerprint, subscription, last_s) SELECT :fp, :sub, :now "
                        "WHERE EXISTS (SELECT 1 FROM alert WHERE fingerprint = :fp) "
                        "ON CONFLICT (fingerprint, subscription) DO UPDATE SET last_s = excluded.last_s"
                    ),
                    {"fp": fp, "sub": sub, "now": now},
                ).rowcount
                if told:
                    firing.append(fp)
            where = {"sub": sub, "key": key}
            resolved = [
                str(body)
                for (body,) in conn.execute(
                    text(
                        "DELETE FROM group_resolved WHERE subscription = :sub AND gkey = :key RETURNING body"
                    ),
                    where,
                )
            ]
            return Claimed(_hold(conn, keep(firing, resolved)), firing, resolved)

    # --- the outbox ---------------------------------------------------------------

    def hold(self, subscription: str, channel: str, notice: str, lease_until: float) -> int:
        """Keep a notice about to be sent until `release`; its id."""
        with self._single.begin() as conn:
            return _hold(conn, Keep([(subscription, channel, notice)], lease_until))[0]

    def release(self, held: int) -> None:
        """The notice was delivered, or recorded as failed: nobody sends it again."""
        self._change("DELETE FROM outbox WHERE id = :id", {"id": held})

    def renew(self, held: list[int], lease_until: float) -> None:
        """The notices `held` are still being sent by their notifier: leased until `lease_until`."""
        self._renew("outbox", held, lease_until)

    def orphans(self, now: float, lease_until: float, limit: int = 50) -> list[tuple[int, str, str, str]]:
        """(id, subscription, channel, notice) of notices whose sender's lease ran out, each now
        leased to the caller until `lease_until`; another caller gets none of them."""
        rows = self._take_expired("outbox", "subscription, channel, notice", now, lease_until, limit)
        return [(int(i), str(sub), str(ch), str(n)) for i, sub, ch, n in rows]


def _lock_alert(conn: Connection, fp: str) -> None:
    """Take one alert's events one at a time, until the transaction ends: a firing event and
    its resolution handled at once by two notifiers must not both find the episode unclosed.
    SQLite's transactions already take the whole database's write lock at their start."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:fp))"), {"fp": fp})


def _pend(conn: Connection, fp: str, pending: Pending, now: float) -> None:
    """Keep a resolution for each group's next message, and make each group due for it."""
    for sub, key in pending.groups:
        where = {"sub": sub, "key": key, "fp": fp, "body": pending.body, "now": now}
        conn.execute(
            text(
                "INSERT INTO group_resolved (subscription, gkey, fingerprint, body) "
                "VALUES (:sub, :key, :fp, :body) "
                "ON CONFLICT (subscription, gkey, fingerprint) DO UPDATE SET body = excluded.body"
            ),
            where,
        )
        conn.execute(
            text(
                "INSERT INTO alert_group (subscription, gkey, last_s, due_s) VALUES (:sub, :key, 0, :now) "
                "ON CONFLICT (subscription, gkey) DO UPDATE "
                "SET due_s = :now, changes = alert_group.changes + 1"
            ),
            where,
        )


def _hold(conn: Connection, keep: Keep) -> list[int]:
    """Put notices in the outbox; their ids, in order."""
    return [
        int(
            conn.execute(
                text(
                    "INSERT INTO outbox (subscription, channel, notice, lease_s) "
                    "VALUES (:sub, :channel, :notice, :lease) RETURNING id"
                ),
                {"sub": sub, "channel": channel, "notice": notice, "lease": keep.lease_until},
            ).scalar_one()
        )
        for sub, channel, notice in keep.notices
    ]
