"""Silences (issue 35): made over the API (`ack` scope, `admin` for one that could hold a
life-safety alarm) or `linli cloud silence`, audited, kept in the state so that one made on a
replica holds on the other, and the alerts they hold still recorded and told once they end.
"""

from __future__ import annotations

import time
from pathlib import Path
from subprocess import Popen

import pytest
from sqlalchemy import Engine

import test_notifier_tokens as tokens
from alertflow import Edge, Hook
from linli.cloud.notifier import silences
from linli.cloud.notifier.config import NotifierConfig, Subscription
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.store import Store
from linli.demo.servers import LocalServer
from support import linli, stop_logged, wait_for
from test_grouping import replicas
from test_notifier import HOOK, Clock, Recorder, alert, at, make, run
from test_notifier_db_faults import TOKEN, get
from test_notifier_tokens import call, create

pytestmark = pytest.mark.servers  # the CLI and the API's tokens run `linli`

served = tokens.served  # the API on a notifier, SQLite and PostgreSQL: that module's fixture
# A silence an `ack` token may make: a charger's temperature rule is no life-safety one.
REPAIR = {"matchers": {"rule": "charger.temperature.above"}, "duration_s": 3600, "comment": "repair"}


def test_a_silence_made_on_one_replica_holds_on_the_other_and_its_alerts_stay_recorded(
    pg_database: tuple[str, Engine],
) -> None:
    url, _ = pg_database
    clock = Clock(at("10:00"))
    one, other = Store(url), Store(url)
    sender_one, sender_other = Recorder(), Recorder()
    try:
        n1 = make(one, [Subscription(id="ops", channels=[HOOK])], clock, sender_one, group_wait_s=0)
        n2 = Notifier(NotifierConfig(group_wait_s=0), other, sender_other, clock)  # type: ignore[arg-type]
        repair = silences.make(
            n1.config, {"rule": "charger.temperature.above", "site": "ronghua-1"},
            starts_s=clock.now, duration_s=3600, author="duty officer", comment="port 1 under repair",
            admin=False,
        )  # fmt: skip
        one.put_silence(repair)
        held, told = alert(), alert(site="gubei-1")
        run(n2, clock, [(1, held), (0, told)])
        assert [notice.alert.site for _, _, notice in n2.sent] == ["gubei-1"]
        assert {a.alert.fingerprint for a in n2.active()} == {held.fingerprint, told.fingerprint}  # recorded
        # Expired on the first replica: the other tells what it held, still firing, once.
        assert silences.expire(one, repair.id, clock.now + 10) is not None
        run(n2, clock, [(10, None)])
        run(n1, clock, [(1, None)])
        assert sorted(notice.alert.site for _, _, notice in [*n1.sent, *n2.sent]) == ["gubei-1", "ronghua-1"]
    finally:
        one.close()
        other.close()


def test_a_silence_deleted_on_one_replica_holds_nothing_on_the_other(pg_database: tuple[str, Engine]) -> None:
    url, _ = pg_database
    clock = Clock(at("10:00"))
    one, other = Store(url), Store(url)
    try:
        n2 = make(other, [Subscription(id="ops", channels=[HOOK])], clock, Recorder(), group_wait_s=0)
        repair = silences.make(
            n2.config, {"rule": "charger.temperature.above"}, starts_s=clock.now, duration_s=3600,
            author="duty officer", comment="port 1 under repair", admin=False,
        )  # fmt: skip
        one.put_silence(repair)
        run(n2, clock, [(1, alert())])
        assert n2.sent == []
        assert silences.delete(n2.config, one, repair.id, admin=False) == repair
        run(n2, clock, [(1, None)])
        assert [notice.alert.site for _, _, notice in n2.sent] == ["ronghua-1"]  # held no more, told once
        assert other.silences() == []
        assert silences.delete(n2.config, one, repair.id, admin=False) is None
    finally:
        one.close()
        other.close()


def test_a_silence_that_could_hold_a_life_safety_alarm_needs_admin_and_each_is_audited(
    served: tuple[str, Path, Notifier],
) -> None:
    base, config, _ = served
    duty, admin = create(config, "ack", "duty officer"), create(config, "admin", "ops")
    repair = REPAIR
    made = call(base, duty, "POST", "/silences", repair)
    assert made.status_code == 200, made.text
    assert made.json()["author"] == "duty officer"
    for matchers in ({"site": "ronghua-1"}, {"rule": "charger.smoke_alarm.above"}, {"rule": "charger.*"}):
        refused = call(base, duty, "POST", "/silences", {**repair, "matchers": matchers})
        assert refused.status_code == 403, matchers
        assert "life-safety" in refused.json()["detail"]
    smoke = {**repair, "matchers": {"rule": "charger.smoke_alarm.above", "site": "ronghua-1"}}
    assert call(base, admin, "POST", "/silences", smoke).status_code == 200
    assert len(call(base, duty, "GET", "/silences").json()) == 2
    expired = call(base, duty, "POST", f"/silences/{made.json()['id']}/expire")
    assert expired.status_code == 200
    assert [s["comment"] for s in call(base, duty, "GET", "/silences").json()] == ["repair"]
    assert call(base, duty, "POST", f"/silences/{made.json()['id']}/expire").status_code == 404
    audit = [(e["who"], e["action"]) for e in call(base, admin, "GET", "/audit").json()]
    assert {("duty officer", "silence"), ("ops", "silence"), ("duty officer", "expire_silence")} <= set(audit)


def test_the_cli_adds_lists_and_expires_a_silence(served: tuple[str, Path, Notifier]) -> None:
    _, config, notifier = served
    added = linli(
        "cloud", "silence", "add", "--config", str(config),
        "--match", "rule=*.silent*", "--match", "site=gubei-1", "--hours", "2",
        "--comment", "the compound's network is being rewired",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.strip()
    listed = linli("cloud", "silence", "list", "--config", str(config))
    assert silence_id in listed.stdout
    assert "rule=*.silent*,site=gubei-1" in listed.stdout
    assert [s.id for s in notifier.store.silences(time.time())] == [silence_id]
    assert linli("cloud", "silence", "expire", "--config", str(config), "--id", silence_id).returncode == 0
    assert notifier.store.silences(time.time()) == []
    unknown = linli("cloud", "silence", "add", "--config", str(config), "--match", "room=1", "--hours", "1",
                    "--comment", "x")  # fmt: skip
    assert unknown.returncode == 2
    assert "room" in unknown.stderr


def test_a_deleted_silence_is_gone_and_holds_nothing_while_an_expired_one_stays_listed_as_ended(
    served: tuple[str, Path, Notifier],
) -> None:
    base, config, notifier = served
    duty = create(config, "ack", "duty officer")
    kept, gone = (call(base, duty, "POST", "/silences", REPAIR).json() for _ in range(2))
    assert call(base, duty, "POST", f"/silences/{kept['id']}/expire").status_code == 200
    deleted = call(base, duty, "DELETE", f"/silences/{gone['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["id"] == gone["id"]
    assert call(base, duty, "DELETE", f"/silences/{gone['id']}").status_code == 404
    # The expired one is listed as ended; the deleted one nowhere, and in no replica's state.
    assert call(base, duty, "GET", "/silences").json() == []
    listed = call(base, duty, "GET", "/silences?ended=true").json()
    assert [s["id"] for s in listed] == [kept["id"]]
    assert listed[0]["ends_s"] <= time.time()
    assert [s.id for s in notifier.store.silences()] == [kept["id"]]
    # One that could hold a life-safety alarm: made by an admin, deleted only by one.
    admin = create(config, "admin", "ops")
    smoke = {**REPAIR, "matchers": {"rule": "charger.smoke_alarm.above", "site": "ronghua-1"}}
    fire = call(base, admin, "POST", "/silences", smoke).json()
    refused = call(base, duty, "DELETE", f"/silences/{fire['id']}")
    assert refused.status_code == 403
    assert "life-safety" in refused.json()["detail"]
    assert call(base, admin, "DELETE", f"/silences/{fire['id']}").status_code == 200
    assert (
        call(base, create(config, "read", "viewer"), "DELETE", f"/silences/{kept['id']}").status_code == 403
    )
    audit = [(e["who"], e["action"], e["target"]) for e in call(base, admin, "GET", "/audit").json()]
    assert {("duty officer", "delete_silence", gone["id"]), ("ops", "delete_silence", fire["id"])} <= set(
        audit
    )
    assert ("duty officer", "delete_silence", fire["id"]) not in audit


def test_the_cli_deletes_a_silence(served: tuple[str, Path, Notifier]) -> None:
    _, config, notifier = served
    added = linli(
        "cloud", "silence", "add", "--config", str(config),
        "--match", "site=gubei-1", "--hours", "2", "--comment", "rewiring",
    )  # fmt: skip
    silence_id = added.stdout.strip()
    deleted = linli("cloud", "silence", "delete", "--config", str(config), "--id", silence_id)
    assert deleted.returncode == 0, deleted.stderr
    assert notifier.store.silences() == []
    assert silence_id not in linli("cloud", "silence", "list", "--config", str(config)).stdout
    again = linli("cloud", "silence", "delete", "--config", str(config), "--id", silence_id)
    assert again.returncode == 1
    assert silence_id in again.stderr


def test_through_mosquitto_a_silence_made_on_one_replica_holds_on_the_other(
    tmp_path: Path, mosquitto: LocalServer, postgresql: LocalServer
) -> None:
    hook = Hook("127.0.0.1")
    settings = "group_wait_s = 1\ngroup_interval_s = 1\nrepeat_s = 3600"
    procs: list[Popen[bytes]] = []
    edge: Edge | None = None
    try:
        ports = replicas(tmp_path, mosquitto, postgresql, hook, settings=settings, procs=procs)
        quiet = {"matchers": {"device": "rescue-0"}, "duration_s": 3600, "comment": "AED being replaced"}
        made = call(f"http://127.0.0.1:{ports[0]}", TOKEN, "POST", "/silences", quiet)
        assert made.status_code == 200, made.text
        edge = Edge(mosquitto.port, devices=4, resend_s=2.0, site="quiet")
        for device in range(4):
            edge.battery(device, 10.0)
        wait_for(
            lambda: told(hook) >= {"rescue-1", "rescue-2", "rescue-3"},
            "the unsilenced alerts told",
            timeout=60,
        )
        assert "rescue-0" not in told(hook)
        assert len(get(ports[1], "/alerts?site=quiet")) == 4  # the silenced alert is recorded
        # Expired on the other replica: the alert it held, still firing, is told.
        expired = call(f"http://127.0.0.1:{ports[1]}", TOKEN, "POST", f"/silences/{made.json()['id']}/expire")
        assert expired.status_code == 200
        wait_for(
            lambda: "rescue-0" in told(hook), "the silenced alert told once its silence ended", timeout=60
        )
        assert all(get(port, "/failed-deliveries") == [] for port in ports)
    finally:
        if edge is not None:
            edge.close()
        hook.close()
        stop_logged(procs, [tmp_path / f"{n}.log" for n in ("n1", "n2")], tail=15)


def told(hook: Hook) -> set[str]:
    """The devices whose alerts the webhook was told of as firing."""
    devices = set()
    for body, _ in list(hook.got):
        for item in body.get("alerts", [body["alert"]]):
            if body["notice"] == "firing" and item.get("standing", "new") != "resolved":
                devices.add(item["device"])
    return devices
