"""Two waste services on one PostgreSQL while the database fails under them (issue 30).

Four trucks drive their morning trips (one finds a gate blocked) through Mosquitto to two
`linli waste run` processes on one state, both following every route; keepers, property
offices, the dispatcher and the operator are webhooks on a loopback receiver. The same
messages go out twice: on a database left alone, and on one that restarts, stops for a while
and has every connection terminated (`pg_terminate_backend`) again and again. Every message
the clean run sent arrives in the faulted run (or is kept in `GET /failed-deliveries`), none
more than twice: a delivery in flight when its hold could not be released is sent once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, create_engine, text

from alertflow import Hook
from linli.cloud.waste.config import TruckBroker, WasteConfig
from linli.cloud.waste.outbox import VisitStore
from linli.cloud.waste.service import WasteService
from linli.demo.servers import LocalServer, free_port, postgresql_url, start_postgresql
from linli.sim.timetable import Traffic, TripFaults, drive_trip
from linli.transit.gtfs import Feed, load_feed
from support import LOOPBACK, influx1_create_db, influx1_query, linli_logged, stop_logged, unique, wait_for
from test_notifier_db_faults import TOKEN, Database, get
from test_waste_service import FEED, MONDAY, TRIP, hand_over

TRIPS = {  # the morning's trips of four trucks; the third bin room of the last one is blocked
    "wet-north-0630": TripFaults(),
    "wet-south-0640": TripFaults(),
    "dry-north-0800": TripFaults(),
    "dry-south-0810": TripFaults(blocked=frozenset({2})),
}
DRIVE_S = 60.0  # the trucks' messages go out over this long
LEASE_S = 30.0  # a delivery held and not finished is sent again after this long
# (share of the messages sent, what): a restart, 15 s stopped, then every connection
# terminated every 2.4 s for 18 s.
FAULTS = [
    (0.10, "terminate"),
    (0.15, "restart"),
    (0.25, "stop"),
    (0.50, "start"),
    *[(0.55 + 0.04 * i, "terminate") for i in range(8)],
]
Key = tuple[str, str, str, str]  # recipient, trip, stop, notice or incident


def district(feed: Feed) -> list[tuple[str, dict[str, Any]]]:
    """(topic, body) of every truck message of the morning, in time order."""
    messages = []
    for trip_id, faults in TRIPS.items():
        trip = feed.trips[trip_id]
        truck = feed.routes[trip.route_id].truck
        rng = random.Random(trip_id)
        drive = drive_trip(feed, trip, MONDAY, rng, traffic=Traffic(sd=0.0, trip_sd=0.1), faults=faults)
        messages += [(f"trucks/fleet/{truck}/{kind}", body) for kind, body in drive.messages]
    return sorted(messages, key=lambda m: m[1]["ts"])


def feed_for(tmp: Path, hooks: str) -> Path:
    """The district's timetable with keepers and property offices told by webhooks on `hooks`
    (the feed's offices are told by e-mail), so the receiver hears every message."""
    gtfs = tmp / "gtfs"
    shutil.copytree(FEED, gtfs)
    extras = gtfs / "linli.toml"
    lines = (
        extras.read_text(encoding="utf-8").replace("http://sms-gateway.district.example", hooks).splitlines()
    )
    for i, line in enumerate(lines):
        if line.startswith("property = "):
            name = line.split('name = "')[1].split('"')[0]
            stop = line.split("property.")[1].split("@")[0]
            lines[i] = (
                f'property = {{ name = "{name}", channels = [{{ kind = "webhook", '
                f'url = "{hooks}/property?p={stop}" }}] }}'
            )
    extras.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return gtfs


def one_trip(tmp: Path, state: str, hooks: str) -> tuple[WasteConfig, Feed, list[tuple[str, dict[str, Any]]]]:
    """An in-process service's config on `state`, telling `hooks`; its feed; a trip's messages."""
    gtfs = feed_for(tmp, hooks)
    feed = load_feed(gtfs)
    config = WasteConfig(gtfs=gtfs, state=state, broker=TruckBroker(port=1), attempts=1, delivery=LOOPBACK)
    drive = drive_trip(feed, feed.trips[TRIP], MONDAY, random.Random(3), traffic=Traffic(sd=0.0, trip_sd=0.1))
    return config, feed, sorted(drive.messages, key=lambda m: m[1]["ts"])


def waste(tmp: Path, name: str, *, broker: int, state: str, gtfs: Path, hooks: str) -> tuple[Any, int]:
    """`linli waste run` as a process, once its API answers; its API port."""
    port = free_port()
    config = tmp / f"{name}.toml"
    people = "\n".join(
        f'[{who}]\nname = "{who}"\nchannels = [{{ kind = "webhook", url = "{hooks}/{who}" }}]\n'
        for who in ("dispatcher", "operator")
    )
    config.write_text(
        f"""gtfs = "{gtfs}"
state = "{state}"
name = "{tmp.name}-{name}"
routes = "every"
api_host = "127.0.0.1"
api_port = {port}
attempts = 3
lease_s = {LEASE_S}

[delivery]
allow_private = true

[broker]
host = "127.0.0.1"
port = {broker}

{people}"""
    )
    log = tmp / f"{name}.log"
    proc = linli_logged(log, TOKEN, "waste", "run", "--config", str(config))
    try:
        # Its API up and its subscriptions granted: the trucks' messages from now on reach it.
        wait_for(lambda: "waste: API on" in log.read_text(errors="replace"), f"waste service {name} up", 60)
    except AssertionError:
        proc.terminate()
        proc.wait(15)
        raise
    return proc, port


def told(hook: Hook) -> Counter[Key]:
    """Every message a person was sent, corrections aside (a correction says the same again)."""
    with hook.lock:
        posts = list(zip(hook.paths, [b for b, _ in hook.got], strict=True))
    return Counter(
        (path, str(b["trip"]), str(b.get("stop")), str(b.get("notice") or b.get("incident")))
        for path, b in posts
        if b.get("notice") != "correction"
    )


def failed_deliveries(port: int) -> set[tuple[str, str, str]]:
    """(trip, stop, notice or incident) of what a service recorded as not delivered."""
    out = set()
    for f in get(port, "/failed-deliveries") or []:
        body = json.loads(f["message"])
        out.add(
            (str(body.get("trip")), str(body.get("stop")), str(body.get("notice") or body.get("incident")))
        )
    return out


def waste_run(
    tmp: Path, mosquitto: LocalServer, database: Database, faults: list[tuple[float, str]]
) -> tuple[Counter[Key], set[tuple[str, str, str]], list[str]]:
    """The morning's messages with `faults` done to the database meanwhile: what each person was
    told, what the services recorded as failed, and what their logs said of bugs (a constraint
    violated, say)."""
    tmp.mkdir()
    hook = Hook("127.0.0.1")
    gtfs = feed_for(tmp, hook.base)
    messages = district(load_feed(gtfs))
    procs: list[Any] = []
    ports: list[int] = []
    truck = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"trucks-{tmp.name}")
    try:
        for n in ("w1", "w2"):
            proc, port = waste(tmp, n, broker=mosquitto.port, state=database.url, gtfs=gtfs, hooks=hook.base)
            procs.append(proc)
            ports.append(port)
        truck.connect("127.0.0.1", mosquitto.port)
        truck.loop_start()
        pending = list(faults)
        began = time.monotonic()
        for i, (topic, body) in enumerate(messages):
            while pending and pending[0][0] <= i / len(messages):
                database.fault(pending.pop(0)[1])
            time.sleep(max(0.0, began + DRIVE_S * i / len(messages) - time.monotonic()))  # the trucks' pace
            truck.publish(topic, json.dumps(body), qos=1).wait_for_publish(10)
        for _, what in pending:  # a schedule that ends after the messages still runs whole
            database.fault(what)

        def settled() -> bool:
            """Both services took every message, have nothing waiting for the state, deliver
            nothing, and the state holds no delivery: nothing is left to send."""
            stats = [get(port, "/stats") or {} for port in ports]
            done = all(
                (s.get("received"), s.get("waiting"), s.get("delivering")) == (len(messages), 0, 0)
                for s in stats
            )
            return done and database.held("waste_delivery") == 0

        with contextlib.suppress(AssertionError):  # the caller compares, and says what is missing
            wait_for(settled, "both services done with every message", timeout=LEASE_S * 4 + 60)
        failed: set[tuple[str, str, str]] = set()
        for port in ports:
            failed |= failed_deliveries(port)
        logs = [(tmp / f"{n}.log").read_text(errors="replace") for n in ("w1", "w2")]
        bugs = [line for text in logs for line in text.splitlines() if "Violation" in line or "a bug" in line]
        print(f"{len(messages)} truck messages")
        return told(hook), failed, bugs
    finally:
        truck.disconnect()
        truck.loop_stop()
        hook.close()
        stop_logged(procs, [tmp / f"{n}.log" for n in ("w1", "w2")])


def test_two_waste_services_tell_everything_once_while_postgresql_fails_under_them(
    tmp_path: Path, mosquitto: LocalServer, postgresql: LocalServer, pg_folder: Path
) -> None:
    clean, clean_failed, clean_bugs = waste_run(
        tmp_path / "clean", mosquitto, Database(postgresql, "waste_clean"), []
    )
    assert not clean_failed
    assert not clean_bugs, clean_bugs
    kinds = Counter(k[3] for k in clean)
    # Each kind the faults once lost: notices, arrivals, collections, a blocked gate, deferred, returned.
    assert {"notice", "arrived", "collected", "blocked", "deferred", "returned"} <= set(kinds), kinds
    assert set(clean.values()) == {1}, clean

    server = start_postgresql(pg_folder / "pg")
    database = Database(server, "waste_faulted")
    try:
        faulted, failed, bugs = waste_run(tmp_path / "faulted", mosquitto, database, FAULTS)
    finally:
        database.server.stop()
    missing = sorted(k for k in clean if k not in faulted and k[1:] not in failed)
    doubled = sorted(k for k, n in faulted.items() if n > 1)
    print(
        "faulted run:",
        json.dumps({"told": sum(faulted.values()), "clean": sum(clean.values()),
                    "missing": missing, "doubled": doubled, "failed": sorted(failed)}),
    )  # fmt: skip
    assert not missing, f"told in the clean run, never in the faulted one: {missing}"
    assert max(faulted.values()) <= 2, f"told more than twice: {doubled}"
    assert set(faulted) <= set(clean), f"never told in the clean run: {set(faulted) - set(clean)}"
    assert not bugs, bugs  # a constraint violated (the trip's key, once) is no outage to retry


def test_a_constraint_violated_is_a_bug_logged_not_an_outage_retried_for_ever(
    tmp_path: Path, pg_database: tuple[str, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    """A trigger makes the database refuse every notice's claim with a UniqueViolation: each is
    counted once and logged as a bug, and nothing waits for the state as if it were down.
    (Before, every DBAPIError was "the state cannot be reached": the notices waited, and were
    claimed again at every tick, for ever.)"""
    url, engine = pg_database
    hook = Hook("127.0.0.1")
    config, feed, messages = one_trip(tmp_path, url, hook.base)
    service = WasteService(config, TOKEN, feed)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE SEQUENCE tried; CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM nextval('tried'); "
                "RAISE unique_violation USING MESSAGE = 'refused by the test'; END $$"
            )
        )
        conn.execute(
            text("CREATE TRIGGER refuse BEFORE INSERT ON waste_notice FOR EACH ROW EXECUTE FUNCTION refuse()")
        )
    caplog.set_level(logging.ERROR, "linli.cloud.waste.service")

    async def run() -> None:
        hand_over(service, messages)
        await service.engine.deliveries.drain(10)

    try:
        asyncio.run(run())
    finally:
        service.state.close()
        hook.close()
    with engine.connect() as conn:  # a sequence is not rolled back with the insert it counted
        tried = conn.execute(text("SELECT last_value FROM tried")).scalar_one()
    # Each notice's claim tried once (not again at each tick) and counted as a bug, none of it
    # taken for an outage, nothing left waiting.
    assert service.engine.state_errors == 0, (service.engine.state_errors, tried)
    assert service.engine.state_bugs == tried > 1, (service.engine.state_bugs, tried)
    assert service.engine.waiting == 0
    bugs = [r.getMessage() for r in caplog.records if "a bug to report" in r.getMessage()]
    assert bugs, "no bug logged"
    assert "UniqueViolation" in bugs[0], bugs
    assert "claiming the notice of trip" in bugs[0], bugs
    assert told(hook) == Counter(), "a notice told that was never claimed"


def test_the_outbox_gives_a_refused_line_up_once_and_keeps_the_rest_through_an_outage(
    tmp_path: Path, influx1: LocalServer, pg_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's outbox on a PostgreSQL of its own. A trigger refuses one line with a
    UniqueViolation: that line is a bug, tried once in its batch and once alone, counted in
    `state_bugs` and given up; the lines beside it and after it reach the store. Then
    PostgreSQL is stopped: the lines put meanwhile wait in memory (an outage, tried again), and
    once it is back every one reaches the store, once. (Before, any database error was an
    outage: the refused line was held with every line after it and tried again at every put,
    and none of them ever reached the store.)"""
    server = start_postgresql(pg_folder / "pg")
    database = Database(server, "outbox")
    engine = create_engine(postgresql_url(server, database.name))
    store = VisitStore(url=influx1.url, database=unique("outbox"))
    influx1_create_db(influx1.url, store.database)
    hook = Hook("127.0.0.1")
    config, feed, _ = one_trip(tmp_path, database.url, hook.base)
    service = WasteService(config, TOKEN, feed)
    outbox = service.engine.outbox
    caplog.set_level(logging.ERROR, "linli.cloud.waste.service")

    def line(n: int, field: str = "n") -> str:
        return f"waste_trip,route=test {field}={n}i {1_700_000_000_000 + n}"

    def stored() -> list[int]:
        rows = influx1_query(store.url, store.database, 'SELECT "n" FROM "waste_trip"')
        return sorted(int(r["n"]) for r in rows if r["n"] is not None)

    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE SEQUENCE tried; CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN IF NEW.line LIKE '%refused=%' THEN PERFORM nextval('tried'); "
                    "RAISE unique_violation USING MESSAGE = 'refused by the test'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON waste_outbox "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
        outbox.put([line(1), line(2, "refused"), line(3)])
        for n in range(4, 7):  # each put and flush after it could try the refused line again
            outbox.put([line(n)])
            assert outbox.flush(store, None) > 0
        with engine.connect() as conn:  # a sequence is not rolled back with the insert it counted
            tried = conn.execute(text("SELECT last_value FROM tried")).scalar_one()
        assert tried == 2, f"the refused line was tried {tried} times"
        assert (service.engine.state_bugs, service.engine.state_errors, outbox.refused) == (1, 0, 1)
        assert stored() == [1, 3, 4, 5, 6]
        assert outbox.pending() == 0
        bugs = [r.getMessage() for r in caplog.records if "a bug to report" in r.getMessage()]
        assert len(bugs) == 1, bugs
        assert "UniqueViolation" in bugs[0], bugs
        assert "refused=2i" in bugs[0], bugs

        database.fault("stop")
        outbox.put([line(7)])
        outbox.put([line(8), line(9)])
        assert outbox.flush(store, None) == 0  # nothing can be read: nothing written, nothing lost
        assert outbox.pending() == 3  # held in memory
        assert service.engine.state_errors >= 3
        assert service.engine.state_bugs == 1
        database.fault("start")
        engine.dispose()
        wait_for(lambda: outbox.flush(store, None) > 0, "the held lines written once the state is back")
        assert stored() == [1, 3, 4, 5, 6, 7, 8, 9]  # each once, the refused one never
        assert outbox.pending() == 0
        assert service.engine.state_bugs == 1
    finally:
        service.state.close()
        engine.dispose()
        hook.close()
        database.server.stop()
