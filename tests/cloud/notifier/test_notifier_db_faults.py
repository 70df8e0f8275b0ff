"""Two notifiers on one PostgreSQL while the database fails under them (issue 30).

An edge's rescue points fire and resolve in turn through Mosquitto to two `linli cloud run`
processes of one group, telling two webhook subscribers. The same sequence runs twice: on a
database left alone, and on one that restarts, stops for a while, and has every notifier
connection terminated (`pg_terminate_backend`) again and again. Every notice the clean run
told arrives in the faulted run (or is kept in `GET /failed-deliveries`), none that it did not
tell, and each once: a notice delivered while its outbox entry could not be released is
released by its notifier once the database answers, never sent again. Only a notifier that
dies leaves its entries to be sent again by another once their lease runs out (one copy per
delivery under way at a kill, `test_notifier.py`); nothing is killed here, and the lease is
longer than the database is ever away, so no live notifier's entry is taken for a dead one's.
The faulted run ends only once the outbox is empty, so a copy would have been counted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from alertflow import Edge, Hook
from linli.cloud.notifier.config import Subscription
from linli.cloud.notifier.store import Store
from linli.demo.servers import LocalServer, free_port, postgresql_url, start_postgresql
from linli.edge.rules import State
from support import create_database, linli_logged, stop_logged, unique, wait_for
from test_notifier import HOOK, Clock, Recorder, alert, at, make, run

TOKEN = "db-faults-test-token-0123456789abcdef"  # noqa: S105 (a test's own)
RESEND_S = 2.0
DEVICES = 12
STAGGER_S = 1.5  # rescue point i fires at i * STAGGER_S
EPISODE_S = 8.0
# A notice not released is sent by another notifier after this long: longer than the 15 s the
# database is stopped and its start under load, so that its own notifier has released it first.
LEASE_S = 40.0
# (seconds from the start, what): over the 24.5 s the alerts flow, backends terminated, a
# restart, 15 s stopped, then backends terminated every 2 s.
FAULTS = [
    (2.0, "terminate"),
    (4.0, "restart"),
    (6.0, "stop"),
    (21.0, "start"),
    (22.0, "terminate"),
    (24.0, "terminate"),
    (26.0, "terminate"),
]
Key = tuple[str, str, str]  # subscriber, alert fingerprint, notice
SITE = "dbfaults"  # both runs: their alerts have the same fingerprints


class Database:
    """The notifiers' PostgreSQL and what the test does to it."""

    def __init__(self, server: LocalServer, name: str) -> None:
        self.server, self.name = server, name
        create_database(postgresql_url(server), name)

    @property
    def url(self) -> str:
        return postgresql_url(self.server, self.name).replace("+psycopg", "")  # as a config names it

    def held(self, table: str = "outbox") -> int:
        """Deliveries held in `table` (the notifier's outbox by default): being sent, or left for
        their lease to run out and be sent again; -1 while the database does not answer."""
        return held(postgresql_url(self.server, self.name), table)

    def fault(self, what: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} postgresql: {what}")
        if what in ("restart", "stop"):
            self.server.stop()
        if what in ("restart", "start"):
            s = self.server
            self.server = start_postgresql(s.datadir, s.port, init=False)
        if what == "terminate":
            engine = create_engine(postgresql_url(self.server), isolation_level="AUTOCOMMIT")
            try:
                with engine.connect() as conn:
                    ended = conn.execute(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = :db AND pid <> pg_backend_pid()"
                        ),
                        {"db": self.name},
                    ).scalar_one()
                print(f"  {ended} backends terminated")
            finally:
                engine.dispose()


def held(url: str, table: str = "outbox") -> int:
    """Deliveries held in `table` of the database at `url` (SQLAlchemy's, with its driver);
    -1 while it does not answer."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    except OperationalError:
        return -1
    finally:
        engine.dispose()


SUBSCRIPTIONS = """
[[subscriptions]]
id = "ops"
channels = [{ kind = "webhook", url = "HOOK/ops" }]
group_by = ["fingerprint"]  # one message per alert step: each counted on its own

[[subscriptions]]
id = "duty"
channels = [{ kind = "webhook", url = "HOOK/duty" }]
group_by = ["fingerprint"]
"""


def notifier(
    tmp: Path,
    name: str,
    *,
    broker: int,
    state: str,
    hook: str,
    group: str,
    settings: str = "group_wait_s = 0\nrepeat_s = 3600",
    subscriptions: str = SUBSCRIPTIONS,
) -> tuple[subprocess.Popen[bytes], int]:
    """`linli cloud run` as a process, once its API answers; its API port. `settings` are the
    config's own, `subscriptions` its subscriptions with HOOK for the webhook's base URL."""
    port = free_port()
    config = tmp / f"{name}.toml"
    config.write_text(
        f"""state = "{state}"
api_host = "127.0.0.1"
api_port = {port}
{settings}
lease_s = {LEASE_S}

[delivery]
allow_private = true

[broker]
host = "127.0.0.1"
port = {broker}
group = "{group}"
keepalive = 2
leave_after_s = 2
{subscriptions.replace("HOOK", hook)}"""
    )
    proc = linli_logged(tmp / f"{name}.log", TOKEN, "cloud", "run", "--config", str(config))
    try:
        wait_for(lambda: get(port, "/health") is not None, f"notifier {name} up", timeout=90)
    except AssertionError:
        proc.terminate()  # not yet the caller's to stop: it would outlive the test
        proc.wait(15)
        raise
    return proc, port


def get(port: int, path: str) -> Any:
    """The API's answer as JSON, or None while it does not answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return json.loads(response.read())
    except OSError:
        return None


def told(hook: Hook) -> Counter[Key]:
    return Counter(
        (path.strip("/"), body["alert"]["fingerprint"], body["notice"])
        for path, (body, _) in zip(list(hook.paths), list(hook.got), strict=False)
        if body["alert"]["kind"] == "rescue_point"
    )


def alert_run(
    tmp: Path, mosquitto: LocalServer, database: Database, faults: list[tuple[float, str]]
) -> tuple[Counter[Key], set[Key]]:
    """The sequence of alerts with `faults` done to the database meanwhile: what each subscriber
    was told, and what the notifiers recorded as failed deliveries."""
    tmp.mkdir()
    hook = Hook("127.0.0.1")
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    group = unique("dbfaults")
    edge: Edge | None = None
    try:
        for n in ("n1", "n2"):
            proc, port = notifier(
                tmp, n, broker=mosquitto.port, state=database.url, hook=hook.base, group=group
            )
            procs.append(proc)
            ports.append(port)
        edge = Edge(mosquitto.port, devices=DEVICES, resend_s=RESEND_S, site=SITE)
        # (seconds from the start, rescue point or -1 for a fault, battery % or the fault)
        steps: list[tuple[float, int, float | str]] = [(i * STAGGER_S, i, 10.0) for i in range(DEVICES)]
        steps += [(i * STAGGER_S + EPISODE_S, i, 90.0) for i in range(DEVICES)]
        steps += [(at, -1, what) for at, what in faults]
        began = time.monotonic()
        for at, device, step in sorted(steps, key=lambda s: s[0]):
            time.sleep(max(0.0, began + at - time.monotonic()))  # the scenario's clock
            if isinstance(step, str):
                database.fault(step)
            else:
                edge.battery(device, step)
        edge.settle()
        events = [e for e in edge.alerting.events if e.state in (State.FIRING, State.RESOLVED)]
        expected = {(sub, e.fingerprint, str(e.state)) for sub in ("ops", "duty") for e in events}
        failed: set[Key] = set()

        def read_failed() -> bool:
            """What the notifiers recorded as failed; False while one does not answer."""
            failed.clear()
            answers = [get(port, "/failed-deliveries") for port in ports]
            for f in (f for answer in answers for f in answer or []):
                failed.add((f["subscription"], f["fingerprint"], f["notice"]))
            return None not in answers

        def complete() -> bool:
            read_failed()
            return set(told(hook)) >= expected

        # The resolutions are announced ten times, every RESEND_S: the last of them bounds the wait.
        with contextlib.suppress(AssertionError):  # the caller compares, and says what is missing
            wait_for(complete, "every notice told", timeout=RESEND_S * 10 + 15)
        # A notice whose outbox entry could not be released is released once the database
        # answers (sent again, it would be counted): the run is over once nothing is held, and
        # two more rounds of the edge's announcements (counted, so the window watched
        # something) have told nothing more.
        wait_for(lambda: database.held() == 0, "no notice held in the outbox", timeout=LEASE_S * 3 + 30)
        rounds = edge.alerting.rounds
        wait_for(lambda: edge.alerting.rounds >= rounds + 2, "two announcement rounds", timeout=RESEND_S * 10)
        # A request that failed (the API's pooled connection killed by the last terminate) is
        # not "nothing failed": the failures are read once both notifiers answer.
        wait_for(read_failed, "each notifier's failed deliveries", timeout=30)
        return told(hook), failed
    finally:
        if edge is not None:
            edge.close()
        hook.close()
        stop_logged(procs, [tmp / f"{n}.log" for n in ("n1", "n2")], tail=15)


def test_two_notifiers_tell_everything_once_while_postgresql_fails_under_them(
    tmp_path: Path, mosquitto: LocalServer, postgresql: LocalServer, pg_folder: Path
) -> None:
    clean, clean_failed = alert_run(tmp_path / "clean", mosquitto, Database(postgresql, "clean"), [])
    assert not clean_failed
    assert len(clean) == DEVICES * 2 * 2, clean
    assert set(clean.values()) == {1}, clean

    server = start_postgresql(pg_folder / "pg")
    database = Database(server, "faulted")
    try:
        faulted, failed = alert_run(tmp_path / "faulted", mosquitto, database, FAULTS)
    finally:
        database.server.stop()
    missing = sorted(k for k in clean if k not in faulted and k not in failed)
    doubled = sorted(k for k, n in faulted.items() if n > 1)
    print("faulted run:", json.dumps({"told": sum(faulted.values()), "missing": missing, "doubled": doubled}))
    assert not missing, f"told in the clean run, never in the faulted one: {missing}"
    assert set(faulted) <= set(clean), f"never told in the clean run: {set(faulted) - set(clean)}"
    assert not doubled, f"told more than once, with no notifier killed: {doubled}"


def test_a_constraint_violated_is_a_bug_logged_once_not_an_outage_retried_for_ever(
    postgresql: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A trigger makes the database refuse the claim (and then the alert) with a
    UniqueViolation: each is counted and logged as a bug, the event is not handed over again,
    and the alert is not tried again at every tick as if the database were down."""
    database = Database(postgresql, unique("bug").replace("-", "_"))
    store, clock, sender = Store(database.url), Clock(at("10:00")), Recorder()
    notifier = make(store, [Subscription(id="ops", channels=[HOOK])], clock, sender, group_wait_s=0)
    engine = create_engine(postgresql_url(postgresql, database.name))

    def refuse(table: str) -> None:
        with engine.begin() as conn:
            conn.execute(
                text(
                    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )

    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE unique_violation USING MESSAGE = 'refused by the test'; END $$"
                )
            )
        refuse("told")
        caplog.set_level(logging.ERROR, "linli.cloud.notifier.engine")
        assert notifier.handle(alert())
        for _ in range(5):
            notifier.tick()
            clock.now += 1
        assert (notifier.errors["bug"], notifier.errors["tick"]) == (1, 0), notifier.errors
        refuse("alert")
        assert notifier.handle(alert(rule="interlock.charger.temperature"))  # taken, not held for ever
        assert notifier.errors["bug"] == 2, notifier.errors
        bugs = [r.getMessage() for r in caplog.records if "a bug to report" in r.getMessage()]
        assert len(bugs) == 2, bugs
        assert "tick failed" in bugs[0], bugs
        assert "UniqueViolation" in bugs[0], bugs
        assert sender.got == []
    finally:
        store.close()
        engine.dispose()


def test_a_subscription_left_untold_by_a_failed_claim_hears_firing_then_resolved(
    postgresql: LocalServer,
) -> None:
    """The database fails between two subscriptions' claims of one alert (issue 30, seen under
    load): "duty" (first by id) heard of it, "ops" not yet. Its resolution, handed over before
    the next tick, still tells "ops" that it fired and that it resolved, as it tells "duty"."""
    database = Database(postgresql, unique("partial").replace("-", "_"))
    store, clock, sender = Store(database.url), Clock(at("10:00")), Recorder()
    subs = [Subscription(id=s, channels=[HOOK]) for s in ("duty", "ops")]
    notifier = make(store, subs, clock, sender, group_wait_s=0)
    engine = create_engine(postgresql_url(postgresql, database.name))
    try:
        with engine.begin() as conn:
            # The connection lost under the claim for "ops" (as pg_terminate_backend does it).
            conn.execute(
                text(
                    "CREATE FUNCTION lose_ops() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF NEW.subscription = 'ops' THEN "
                    "RAISE EXCEPTION 'lost by the test' USING ERRCODE = 'admin_shutdown'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER lose_ops BEFORE INSERT ON alert_group "
                    "FOR EACH ROW EXECUTE FUNCTION lose_ops()"
                )
            )
        run(notifier, clock, [(0, alert())])
        assert sender.got == [("duty", "firing", "webhook")]
        assert notifier.errors["tick"] >= 1, notifier.errors
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER lose_ops ON alert_group"))
        run(notifier, clock, [(1, alert("resolved"))])  # handled before the tick that would tell "ops"
        ops = [kind for sub, kind, _ in sender.got if sub == "ops"]
        duty = [kind for sub, kind, _ in sender.got if sub == "duty"]
        assert ops == ["firing", "resolved"], sender.got
        assert duty == ["firing", "resolved"], sender.got
    finally:
        store.close()
        engine.dispose()
