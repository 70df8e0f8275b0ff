"""The waste service's state: an SQLite file on one box, PostgreSQL for several hosts.

Notices and incidents are claimed by inserting them (see migration 0005): services that
follow the same trucks decide the same notices, and whichever inserts one first sends it; an
insert that finds it there does nothing and sends nothing. Lines for the store wait in
`waste_outbox` until the store has them. What the predictor learned waits in `waste_step` for
a service started again (migration 0010).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from linli.cloud.db import LAST_ID, Tables, is_url
from linli.cloud.waste.predict import Step
from linli.cloud.waste.rollups import Period, Rollup
from linli.cloud.waste.tracking import Incident, KeeperNotice
from linli.transit.stops import Visit

log = logging.getLogger(__name__)

# Where a trip stands: its `waste_trip` row and its stops' `waste_trip_stop` rows.
Snapshot = tuple[dict[str, Any], list[dict[str, Any]]]
# A delivery held until it is delivered: contact, channel (JSON), message (JSON), thread, lease.
Hold = tuple[str, str, str, str, float]

# Any fixed number: the advisory lock whose holder runs the renovation dispatch.
DISPATCH_LOCK = 0x6C696E6C6977
# How often a service asks whether it leads (a round trip to the database).
LEAD_CHECK_S = 2.0

# An earlier release's tables, renamed before the migrations take the file over.
LEGACY = {
    "notice": "legacy_notice",
    "failed_delivery": "legacy_failed_delivery",
    "outbox": "legacy_outbox",
    "booking_event": "legacy_booking_event",
}
NOTICE = text(
    "INSERT INTO waste_notice (trip_id, day, stop_id, idx, kind, seq, time_ms, predicted_ms, bins, kg) "
    "VALUES (:trip, :day, :stop, :idx, :kind, :seq, :time_ms, :predicted_ms, :bins, :kg) "
    "ON CONFLICT DO NOTHING"
)
INCIDENT = text(
    "INSERT INTO waste_incident (trip_id, day, kind, stop_id, seq, time_ms, route, truck, detail) "
    "VALUES (:trip, :day, :kind, :stop, :seq, :time_ms, :route, :truck, :detail) "
    "ON CONFLICT DO NOTHING RETURNING id"
)
HOLD = text(
    "INSERT INTO waste_delivery (contact, channel, message, thread, lease_s) "
    "VALUES (:contact, :channel, :message, :thread, :lease) RETURNING id"
)

STEP = text(
    "INSERT INTO waste_step (trip_id, day, idx, state, route, time_ms, from_ms, scheduled_s, expected_s, "
    "dwell_bins, plain_s, due_ms) VALUES (:trip, :day, :idx, :state, :route, :time_ms, :from_ms, "
    ":scheduled_s, :expected_s, :dwell_bins, :plain_s, :due_ms) ON CONFLICT DO NOTHING"
)
STEP_COLUMNS = "idx, state, time_ms, from_ms, scheduled_s, expected_s, dwell_bins, plain_s, due_ms"
# The newest steps a starting service learns from: some weeks of a district's trips.
RECALLED_STEPS = 50_000

# A tick's writes go to the driver as they are (`_many`): compiling them each time was most of
# what a tick cost (sqlalchemy's parameters per row).
TRIP = (
    "INSERT INTO waste_trip (trip_id, day, route, truck, waste_type, next_idx, progress_m, finished, "
    "updated_ms) VALUES (:trip_id, :day, :route, :truck, :waste_type, :next_idx, :progress_m, :finished, "
    ":updated_ms) ON CONFLICT (trip_id, day) DO UPDATE SET route = excluded.route, truck = excluded.truck, "
    "waste_type = excluded.waste_type, next_idx = excluded.next_idx, progress_m = excluded.progress_m, "
    "finished = excluded.finished, updated_ms = excluded.updated_ms"
)

TRIP_STOPS_GONE = "DELETE FROM waste_trip_stop WHERE trip_id = :trip AND day = :day"
TRIP_STOP = (
    "INSERT INTO waste_trip_stop (trip_id, day, idx, stop_id, state, scheduled_ms, predicted_ms) "
    "VALUES (:trip_id, :day, :idx, :stop_id, :state, :scheduled_ms, :predicted_ms)"
)
OUTBOX = "INSERT INTO waste_outbox (line) VALUES (:line)"
PARAMETER = re.compile(r":(\w+)")


def adopt_legacy_file(state: str | Path) -> bool:
    """An SQLite file an earlier waste service made (no migrations): its tables renamed to
    `legacy_*`, for the migrations to move their rows. True when there was one."""
    if is_url(state) or not Path(state).exists():
        return False
    db = sqlite3.connect(str(state))
    try:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "alembic_version" in tables or "notice" not in tables:
            return False
        with db:
            # Index names are the file's, not the table's: the new tables' own would clash.
            db.execute("DROP INDEX IF EXISTS notice_trip")
            db.execute("DROP INDEX IF EXISTS booking_event_of")
            for old, new in LEGACY.items():
                if old in tables:
                    db.execute(f'ALTER TABLE "{old}" RENAME TO "{new}"')
        return True
    finally:
        db.close()


class WasteState(Tables):
    """Notices, incidents, failed deliveries, the store's outbox and the predictor's steps
    (bookings: `Bookings`)."""

    def __init__(self, state: str | Path) -> None:
        adopt_legacy_file(state)
        super().__init__(state)

    # --- notices ---------------------------------------------------------------

    def claim_notice(self, n: KeeperNotice, day: str, seq: int) -> bool:
        """Record a notice before it is sent; False when it is recorded already (told)."""
        return self.claim_and_hold(n, day, seq, []) is not None

    def claim_and_hold(self, n: KeeperNotice, day: str, seq: int, holds: Sequence[Hold]) -> list[int] | None:
        """Record a notice and hold its deliveries (`hold`) in one transaction: the holds' ids,
        or None when the notice is recorded already (told), and nothing is held. A state that
        fails between the two keeps neither: the notice is claimed again, never claimed and lost."""
        params = {
            "trip": n.trip_id,
            "day": day,
            "stop": n.stop_id,
            "idx": n.index,
            "kind": str(n.kind),
            "seq": seq,
            "time_ms": round(n.time_s * 1000),
            "predicted_ms": None if n.predicted_s is None else round(n.predicted_s * 1000),
            "bins": n.bins,
            "kg": n.kg,
        }
        with self._engine.begin() as conn:
            if conn.execute(NOTICE, params).rowcount != 1:
                return None
            return [_hold(conn, hold) for hold in holds]

    def told(self, trip_id: str, day: str) -> list[tuple[int, str, int, int | None]]:
        """A trip's notices sent so far, in order: (stop index, kind, time, predicted time)."""
        rows = self._rows(
            "SELECT idx, kind, time_ms, predicted_ms FROM waste_notice "
            "WHERE trip_id = :trip AND day = :day ORDER BY id",
            {"trip": trip_id, "day": day},
        )
        return [(int(i), str(k), int(t), None if p is None else int(p)) for i, k, t, p in rows]

    def notices(
        self, limit: int = 1000, day: str | None = None, before: int | None = None
    ) -> list[dict[str, Any]]:
        """The newest `limit` notices, of one service day (ISO date) if given; those before the
        notice `before` (its `id`), for the API's next page."""
        where = "AND day = :day " if day is not None else ""
        query = (  # a fixed clause, the values bound
            "SELECT id, trip_id, day, stop_id, idx, kind, time_ms, predicted_ms, bins, kg FROM waste_notice "  # noqa: S608
            f"WHERE id < :before {where}ORDER BY id DESC LIMIT :limit"
        )
        return self._dicts(
            query, {"day": day, "limit": limit, "before": LAST_ID if before is None else before}
        )

    # --- incidents ---------------------------------------------------------------

    def claim_incident(self, i: Incident, day: str, seq: int, route: str, truck: str) -> int | None:
        """Record an incident before anyone is told; its number, or None when recorded already."""
        claimed = self.claim_incident_and_hold(i, day, seq, route, truck, holds=[])
        return None if claimed is None else claimed[0]

    def claim_incident_and_hold(
        self, i: Incident, day: str, seq: int, route: str, truck: str, *, holds: Sequence[Hold]
    ) -> tuple[int, list[int]] | None:
        """`claim_incident` and its deliveries held in one transaction, as `claim_and_hold`: its
        number and the holds' ids, or None (recorded already, nothing held)."""
        params = {
            "trip": i.trip_id,
            "day": day,
            "kind": str(i.kind),
            "stop": i.stop_id or "",
            "seq": seq,
            "time_ms": round(i.time_s * 1000),
            "route": route,
            "truck": truck,
            "detail": i.detail,
        }
        with self._engine.begin() as conn:
            number = conn.execute(INCIDENT, params).scalar()
            return None if number is None else (int(number), [_hold(conn, hold) for hold in holds])

    def incidents(self, number: int | None = None) -> list[dict[str, Any]]:
        """Every incident, oldest first, or the one of that `number` (what acknowledges it)."""
        where = "" if number is None else "WHERE id = :n "
        query = (  # a fixed clause, the values bound
            "SELECT id AS number, kind, trip_id AS trip, NULLIF(stop_id, '') AS stop, time_ms, detail, "  # noqa: S608
            f"route, truck, acked_ms FROM waste_incident {where}ORDER BY id"
        )
        return self._dicts(query, {"n": number})

    def acknowledge(self, number: int, at_ms: int) -> dict[str, Any] | None:
        """Close incident `number`; the incident (`newly`: this call closed it), or None."""
        changed = self._change(
            "UPDATE waste_incident SET acked_ms = :at WHERE id = :n AND acked_ms IS NULL",
            {"n": number, "at": at_ms},
        )
        found = self.incidents(number)
        return {**found[0], "newly": changed == 1} if found else None

    def incidents_of(self, trip_id: str, day: str) -> list[tuple[str, str, int]]:
        """A trip's incidents recorded so far: (kind, stop, time)."""
        rows = self._rows(
            "SELECT kind, stop_id, time_ms FROM waste_incident WHERE trip_id = :trip AND day = :day "
            "ORDER BY id",
            {"trip": trip_id, "day": day},
        )
        return [(str(k), str(stop), int(t)) for k, stop, t in rows]

    # --- failed deliveries ----------------------------------------------------------

    def failed(self, at_ms: int, contact: str, channel: str, message: str, error: str) -> None:
        self._change(
            "INSERT INTO waste_failed_delivery (at_ms, contact, channel, message, error) "
            "VALUES (:at, :contact, :channel, :message, :error)",
            {"at": at_ms, "contact": contact, "channel": channel, "message": message, "error": error},
        )

    def failures(self, after: int | None = None, limit: int = LAST_ID) -> list[dict[str, Any]]:
        """Notices recorded as failed, oldest first; those after the row `after` (its `id`)."""
        return self._dicts(
            "SELECT id, at_ms, contact, channel, message, error FROM waste_failed_delivery "
            "WHERE id > :after ORDER BY id LIMIT :n",
            {"after": after or 0, "n": limit},
        )

    # --- deliveries under way ---------------------------------------------------------

    def hold(self, contact: str, channel: str, message: str, thread: str, lease_until: float) -> int:
        """Keep a delivery about to start until `release`; its id."""
        with self._single.begin() as conn:
            return _hold(conn, (contact, channel, message, thread, lease_until))

    def release(self, held: int) -> None:
        """Delivered, or recorded as failed: nobody sends it again."""
        self._change("DELETE FROM waste_delivery WHERE id = :id", {"id": held})

    def renew(self, held: list[int], lease_until: float) -> None:
        """The deliveries `held` are still being sent by their service: leased until `lease_until`."""
        self._renew("waste_delivery", held, lease_until)

    def orphans(
        self, now: float, lease_until: float, limit: int = 50
    ) -> list[tuple[int, str, str, str, str]]:
        """(id, contact, channel, message, thread) of deliveries whose sender's lease ran out,
        each now leased to the caller until `lease_until`; no other caller gets them."""
        rows = self._take_expired(
            "waste_delivery", "contact, channel, message, thread", now, lease_until, limit
        )
        return [(int(i), str(c), str(ch), str(m), str(t)) for i, c, ch, m, t in rows]

    # --- trips followed ------------------------------------------------------------------

    def trip_seen(self, trip: dict[str, Any], stops: list[dict[str, Any]]) -> None:
        """Where a trip stands and its stops' predicted arrivals, replacing what was there.

        Every service following the trip writes it: the trip's row is upserted first, which
        locks it, so two writers take turns over its stops rather than both inserting it (a
        delete then an insert let both find no row and one then violate its key)."""
        self.put([], [(trip, stops)])

    def _trips_seen(self, conn: Connection, trips: Sequence[Snapshot]) -> None:
        """`trip_seen` of each, in the order of their keys: two services writing the same trips
        in one transaction each lock them in the same order, and never deadlock. Each statement
        once for every trip (`executemany`), not once a trip."""
        if not trips:
            return
        ordered = sorted(trips, key=lambda t: (t[0]["trip_id"], t[0]["day"]))
        _many(conn, TRIP, [trip for trip, _ in ordered])
        _many(conn, TRIP_STOPS_GONE, [{"trip": trip["trip_id"], "day": trip["day"]} for trip, _ in ordered])
        rows = [
            {"day": trip["day"], "trip_id": trip["trip_id"], **stop}
            for trip, stops in ordered
            for stop in stops
        ]
        if rows:
            _many(conn, TRIP_STOP, rows)

    def trip_finished(self, trip_id: str, day: str) -> bool:
        """Whether a trip's follower saw it finished (back at the depot, or given up)."""
        rows = self._rows(
            "SELECT finished FROM waste_trip WHERE trip_id = :trip AND day = :day",
            {"trip": trip_id, "day": day},
        )
        return bool(rows and rows[0][0])

    # --- tonnage rollups -------------------------------------------------------------

    def keep_rollups(self, rollups: list[Rollup], since: dict[Period, int]) -> None:
        """Replace each period's rollups from `since[period]` (its local start, ms) on."""
        rows = [
            {
                "period": str(r.period),
                "start_ms": int(r.start.timestamp() * 1000),
                "waste_type": r.waste_type,
                "stop": r.stop,
                "route": r.route,
                "truck": r.truck,
                "lifts": r.lifts,
                "bins": r.bins,
                "kg": round(r.kg, 3),
            }
            for r in rollups
        ]
        with self._engine.begin() as conn:
            for period, start_ms in since.items():
                conn.execute(
                    text("DELETE FROM waste_rollup WHERE period = :p AND start_ms >= :s"),
                    {"p": str(period), "s": start_ms},
                )
            if rows:
                conn.execute(
                    text(
                        "INSERT INTO waste_rollup (period, start_ms, waste_type, stop, route, truck, lifts, "
                        "bins, kg) VALUES (:period, :start_ms, :waste_type, :stop, :route, :truck, :lifts, "
                        ":bins, :kg)"
                    ),
                    rows,
                )

    def rollups(self, period: Period, since_ms: int) -> list[dict[str, Any]]:
        """A period's rollups from `since_ms` on, oldest first."""
        return self._dicts(
            "SELECT start_ms, waste_type, stop, route, truck, lifts, bins, kg FROM waste_rollup "
            "WHERE period = :p AND start_ms >= :s ORDER BY start_ms, waste_type, stop, route, truck",
            {"p": str(period), "s": since_ms},
        )

    # --- what the predictor learned ----------------------------------------------------

    def keep_steps(self, trip_id: str, day: str, route: str, steps: list[Step]) -> None:
        """A trip's steps (stops reached and left, what they taught), for a restarted service."""
        if not steps:
            return

        def ms(s: float | None) -> int | None:
            return None if s is None else round(s * 1000)

        rows = [
            {"trip": trip_id, "day": day, "idx": st.index, "state": str(st.state), "route": route,
             "time_ms": ms(st.time_s), "from_ms": ms(st.from_s), "scheduled_s": st.scheduled_s,
             "expected_s": st.expected_s, "dwell_bins": st.dwell_bins, "plain_s": st.plain_s,
             "due_ms": ms(st.due_s)}
            for st in steps
        ]  # fmt: skip
        with self._engine.begin() as conn:
            conn.execute(STEP, rows)

    def steps_of(self, trip_id: str, day: str) -> list[Step]:
        """A trip's steps kept so far, in order."""
        return [
            _step(row[1:])
            for row in self._rows(
                f"SELECT route, {STEP_COLUMNS} FROM waste_step "  # noqa: S608 (a constant)
                "WHERE trip_id = :trip AND day = :day ORDER BY time_ms, idx",
                {"trip": trip_id, "day": day},
            )
        ]

    def learned(self, limit: int = RECALLED_STEPS) -> list[tuple[str, str, Step]]:
        """The newest `limit` steps that taught the predictor something, oldest first: (route,
        service day, step)."""
        rows = self._rows(
            f"SELECT route, day, {STEP_COLUMNS} FROM waste_step "  # noqa: S608 (a constant)
            "WHERE scheduled_s IS NOT NULL OR dwell_bins IS NOT NULL OR due_ms IS NOT NULL "
            "ORDER BY time_ms DESC, idx DESC LIMIT :n",
            {"n": limit},
        )
        return [(str(row[0]), str(row[1]), _step(row[2:])) for row in reversed(rows)]

    # --- the store's outbox -----------------------------------------------------------

    def put(self, lines: list[str], trips: Sequence[Snapshot] = ()) -> None:
        """Lines for the store, and where `trips` stand (`trip_seen`), in one transaction."""
        if lines or trips:
            with self._engine.begin() as conn:
                self._trips_seen(conn, trips)
                if lines:
                    _many(conn, OUTBOX, [{"line": line} for line in lines])

    def pending(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM waste_outbox")[0][0])

    def waiting(self, limit: int, after: int = 0) -> list[tuple[int, str]]:
        """The oldest lines waiting, after the id `after`: (id, line)."""
        rows = self._rows(
            "SELECT id, line FROM waste_outbox WHERE id > :after ORDER BY id LIMIT :n",
            {"n": limit, "after": after},
        )
        return [(int(i), str(line)) for i, line in rows]

    def written(self, ids: list[int]) -> None:
        """These lines are in the store."""
        if ids:
            with self._engine.begin() as conn:
                conn.execute(text("DELETE FROM waste_outbox WHERE id = :id"), [{"id": i} for i in ids])


def _many(conn: Connection, sql: str, rows: list[dict[str, Any]]) -> None:
    """`sql` (its parameters `:name`) for each of `rows`, straight to the driver: SQLite takes
    `:name` as it is, psycopg `%(name)s`. Errors come as DBAPIError all the same."""
    driver_sql = sql if conn.dialect.name == "sqlite" else PARAMETER.sub(r"%(\1)s", sql)
    conn.exec_driver_sql(driver_sql, rows)


def _hold(conn: Connection, hold: Hold) -> int:
    contact, channel, message, thread, lease_until = hold
    params = {
        "contact": contact,
        "channel": channel,
        "message": message,
        "thread": thread,
        "lease": lease_until,
    }
    return int(conn.execute(HOLD, params).scalar_one())


def _step(row: tuple[Any, ...]) -> Step:
    idx, state, time_ms, from_ms, scheduled_s, expected_s, dwell_bins, plain_s, due_ms = row
    return Step(
        int(idx),
        Visit(state),
        time_ms / 1000,
        None if from_ms is None else from_ms / 1000,
        None if scheduled_s is None else float(scheduled_s),
        None if expected_s is None else float(expected_s),
        None if dwell_bins is None else int(dwell_bins),
        None if plain_s is None else float(plain_s),
        None if due_ms is None else due_ms / 1000,
    )


class Leadership:
    """Which one of the services on one state runs the renovation dispatch (offers, drivers'
    answers, a truck's bookings moving on): on PostgreSQL the holder of a session advisory lock,
    which the database lets go when the holder's connection ends (a dead host's within seconds,
    by the keepalives); the others take it over then. On SQLite, one box: always this one."""

    def __init__(self, tables: Tables, recheck_s: float = LEAD_CHECK_S) -> None:
        self._engine = tables.engine
        self._recheck_s = recheck_s
        self._conn: Connection | None = None
        self._checked = -recheck_s
        self._held = self._engine.dialect.name != "postgresql"

    def held(self) -> bool:
        """Whether this service leads now (asked of the database at most every `recheck_s`)."""
        if self._engine.dialect.name != "postgresql":
            return True
        now = time.monotonic()
        if now - self._checked < self._recheck_s:
            return self._held
        self._checked = now
        was = self._held
        self._held = self._still() if self._conn is not None else self._take()
        if self._held and not was:
            log.info("waste: runs the renovation dispatch")
        elif was and not self._held:
            log.warning("waste: no longer runs the renovation dispatch (another service does)")
        return self._held

    def _still(self) -> bool:
        assert self._conn is not None
        try:
            self._conn.execute(text("SELECT 1"))
            return True
        except DBAPIError:
            self._drop()
            return self._take()

    def _take(self) -> bool:
        try:
            # Its own connection, outside any transaction, kept as long as the lock is held.
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except DBAPIError:
            return False
        try:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": DISPATCH_LOCK}).scalar())
        except DBAPIError:
            got = False
        if got:
            self._conn = conn
        else:
            conn.close()
        return got

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()  # never back to the pool, still holding the lock
                self._conn.close()
            except DBAPIError:
                pass
            self._conn = None

    def close(self) -> None:
        self._drop()
        self._held = False
