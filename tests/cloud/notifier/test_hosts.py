"""The notifier on several hosts that fail, under a steady stream of alerts.

Four hosts (network namespaces on one bridge): the broker's (this test's own, where the edge
and the webhook run too), PostgreSQL's, and two notifiers'. While an edge's 30 rescue points
fire and resolve in turn, one notifier host is cut off the network and later killed (then
started again), PostgreSQL restarts, and a notifier is partitioned from the database while
it still reaches the broker. Every alert step must be told once, and each failure's
steps while it lasts: no fault begins or ends before every step fired so far is told, so the
steps fired while a notifier is cut off or partitioned are shown told by the other one. How
late steps are told is printed, a figure of the machine, not asserted. A notice n1 delivered
but could not release before it was cut off, then killed, is sent again by n2 once its lease
runs out: the one copy a kill may cost, allowed for the steps fired before the cut. No other
step may be told twice: a notifier that delivered a notice while the database was away
releases it once the database answers, and the run ends only once the outbox is empty.

The edge is linli's own alerting (rule engine, publisher, announcements again every
`RESEND_S`) in this process; the notifiers are `linli cloud run` processes.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alertflow import Edge, Hook
from linli.demo.servers import (
    LocalServer,
    free_port,
    postgresql_url,
    start_mosquitto_with,
    start_postgresql,
)
from linli.edge.rules import State
from netns import Hosts
from support import create_database, http_get, wait_for
from test_notifier_db_faults import held

TOKEN = "hosts-test-token-0123456789abcdef"  # noqa: S105 (a test's own)
RESEND_S = 2.0  # the edge announces its alerts again this often
KEEPALIVE_S = 2  # the broker drops a silent notifier after 3 s
LEAVE_AFTER_S = 2.0
DEVICES = 30
EPISODE_S = 20.0  # how long each alert fires
PERIOD_S = 30.0  # a rescue point fires again this long after it first fired
RUN_S = 62.0
# A guard, not a pace: the partitioned notifier takes up to 6 s to find its database gone
# (PG_TIMEOUTS, a dead connection then a new one) on a quiet machine, then leaves the group,
# and an edge's announcement reaches the other notifier within 2 s; under load, several times that.
TOLD_TIMEOUT_S = 120.0
# A notice left in the outbox is sent by the other notifier after this long: longer than
# PostgreSQL's restart and n2's partition (15 s) and its reconnection, so that a live notifier
# has released what it delivered first; short enough for a copy to be sent, and counted, in the run.
LEASE_S = 45.0
FAULTS = [  # (seconds from the start, what)
    (4.0, "cut n1"),
    (12.0, "kill n1"),
    (14.0, "start n1"),
    (22.0, "restart postgresql"),
    (32.0, "partition n2 from postgresql"),
    (47.0, "heal n2"),
]


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    h = Hosts(["postgresql", "n1", "n2"])
    yield h
    h.close()


def notifier_config(path: Path, hosts: Hosts, name: str, *, broker: int, state: str, hook: str) -> Path:
    path.write_text(
        f"""state = "{state}"
api_host = "{hosts.address(name)}"
api_port = 8790
group_wait_s = 0
repeat_s = 3600
lease_s = {LEASE_S}

[delivery]
allow_private = true

[broker]
host = "{hosts.here}"
port = {broker}
group = "hosts"
keepalive = {KEEPALIVE_S}
leave_after_s = {LEAVE_AFTER_S}

[[subscriptions]]
id = "ops"
channels = [{{ kind = "webhook", url = "{hook}" }}]
group_by = ["fingerprint"]  # one message per alert step: each counted on its own
"""
    )
    return path


def schedule() -> list[tuple[float, int, float]]:
    """(seconds from the start, device, battery %): each rescue point fires and resolves in turn."""
    steps = []
    for device in range(DEVICES):
        start = device * (PERIOD_S / DEVICES)
        while start + EPISODE_S <= RUN_S:
            steps += [(start, device, 10.0), (start + EPISODE_S, device, 90.0)]
            start += PERIOD_S
    return sorted(steps)


def starter(
    hosts: Hosts, tmp_path: Path, command: list[str], configs: dict[str, Path], api_port: int
) -> Callable[[str], None]:
    """`start(name)`: `linli COMMAND --config` of that host's config on the host, once its API
    answers; its output in NAME.log."""
    env = {"PATH": "/usr/bin:/bin", "LINLI_CLOUD_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}

    def start(name: str) -> None:
        argv = [sys.executable, "-m", "linli.cli", *command, "--config", str(configs[name])]
        hosts.run(name, argv, tmp_path / f"{name}.log", env)
        health = f"http://{hosts.address(name)}:{api_port}/health"
        wait_for(lambda: _answers(health), f"{' '.join(command)} on {name} up", timeout=30)

    return start


def servers(hosts: Hosts, tmp_path: Path, pg_folder: Path) -> tuple[LocalServer, LocalServer]:
    """Mosquitto on the test's host (and loopback, for its readiness), PostgreSQL on its own."""
    broker_port = free_port()
    conf = tmp_path / "broker.conf"
    conf.write_text(
        f"listener {broker_port} 127.0.0.1\nlistener {broker_port} {hosts.here}\nallow_anonymous true\n"
    )
    broker = start_mosquitto_with(tmp_path / "broker", conf, broker_port)
    database = start_postgresql(
        pg_folder / "pg", host=hosts.address("postgresql"), netns=hosts.namespace("postgresql"),
        clients=hosts.network,
    )  # fmt: skip
    return broker, database


def test_each_alert_step_is_told_once_while_hosts_fail(hosts: Hosts, tmp_path: Path, pg_folder: Path) -> None:
    broker, database = servers(hosts, tmp_path, pg_folder)
    broker_port = broker.port
    hook = Hook(hosts.here)
    edge: Edge | None = None
    try:
        create_database(postgresql_url(database), "notifier")
        driver_url = postgresql_url(database, "notifier")
        url = driver_url.replace("+psycopg", "")  # as a config names it
        configs = {
            n: notifier_config(tmp_path / f"{n}.toml", hosts, n, broker=broker_port, state=url, hook=hook.url)
            for n in ("n1", "n2")
        }
        start = starter(hosts, tmp_path, ["cloud", "run"], configs, 8790)

        start("n1")
        start("n2")
        edge = Edge(broker_port, devices=DEVICES, resend_s=RESEND_S)

        def told() -> Counter[tuple[str, int, str]]:
            return Counter(key for key, _ in notices(hook))

        def told_all(fired: set[tuple[str, int, str]]) -> Callable[[], bool]:
            return lambda: fired <= set(told())

        began = time.time()
        faults = list(FAULTS)
        for at, device, percent in schedule():
            while faults and faults[0][0] <= at:
                fault_at, what = faults.pop(0)
                time.sleep(max(0.0, began + fault_at - time.time()))
                # The failure so far has been survived: before "heal n2", every step fired while
                # n2 could not reach its database was told by n1.
                edge.settle()
                wait_for(told_all(steps(edge)), f"every step fired before '{what}' told", TOLD_TIMEOUT_S)
                database = fault(what, hosts, database, start)
            time.sleep(max(0.0, began + at - time.time()))
            edge.battery(device, percent)
        edge.settle()

        episodes = [e for e in edge.alerting.events if e.state in (State.FIRING, State.RESOLVED)]
        expected = Counter((e.fingerprint, e.since_ms, str(e.state)) for e in episodes)
        assert len(expected) == len(episodes) == len(schedule())

        step_time = {(e.fingerprint, e.since_ms, str(e.state)): e.time_ms / 1000 for e in episodes}
        try:
            wait_for(lambda: set(told()) >= set(expected), "every step told", timeout=TOLD_TIMEOUT_S)
        except AssertionError:
            gone = set(expected) - set(told())
            missing = sorted((round(step_time[k] - began, 1), k[2], k[0]) for k in gone)
            raise AssertionError(f"never told (seconds from the start, step, alert): {missing}") from None
        # A notice left in the outbox is sent again once its lease runs out: the run is over
        # once nothing is held. Announcements go on: two more rounds (counted, so the window
        # has watched something), the first with a period after it to be handled, and nothing
        # may be told again.
        wait_for(lambda: held(driver_url) == 0, "no notice held in the outbox", timeout=LEASE_S * 2 + 30)
        rounds = edge.alerting.rounds
        wait_for(lambda: edge.alerting.rounds >= rounds + 2, "two announcement rounds", timeout=RESEND_S * 10)
        got = told()
        assert set(got) == set(expected), f"unknown: {set(got) - set(expected)}"
        cut = next(at for at, what in FAULTS if what == "cut n1")
        doubled = {(round(step_time[k] - began, 1), k[2], k[0]): n for k, n in got.items() if n > 1}
        print("told twice (seconds from the start, step, alert):", sorted(doubled))
        assert max(got.values()) <= 2, f"told more than twice: {doubled}"
        assert all(at < cut for at, _, _ in doubled), f"told twice, not for the kill of n1: {doubled}"

        delay = {key: arrived - step_time[key] for key, arrived in notices(hook)}
        delays = sorted(delay.values())
        late = sorted((round(step_time[k] - began, 1), k[2], round(d, 2)) for k, d in delay.items() if d > 1)
        figures = {
            "steps": len(delays),
            "median_s": round(statistics.median(delays), 3),
            "p99_s": round(delays[int(len(delays) * 0.99) - 1], 3),
            "max_s": round(delays[-1], 3),
            "late": late,  # (seconds from the start, step, delay): see FAULTS for what was failing
        }
        print("told once each:", json.dumps(figures))
    finally:
        if edge is not None:
            edge.close()
        hook.close()
        hosts.close()
        database.stop()
        broker.stop()
        for name in ("n1", "n2"):
            log = tmp_path / f"{name}.log"
            if log.exists():
                print(f"--- {name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))


def steps(edge: Edge) -> set[tuple[str, int, str]]:
    """(fingerprint, since, step) of every alert step the edge has fired or resolved so far."""
    return {
        (e.fingerprint, e.since_ms, str(e.state))
        for e in list(edge.alerting.events)
        if e.state in (State.FIRING, State.RESOLVED)
    }


def notices(hook: Hook) -> list[tuple[tuple[str, int, str], float]]:
    """((fingerprint, since, step), when it arrived) of each rescue point's notice."""
    return [
        ((b["alert"]["fingerprint"], b["alert"]["since_ms"], b["notice"]), arrived)
        for b, arrived in list(hook.got)
        if b["alert"]["kind"] == "rescue_point"
    ]


def _answers(url: str) -> bool:
    """The API answers (a refusal without a token is an answer)."""
    try:
        http_get(url, timeout=1)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def fault(what: str, hosts: Hosts, database: LocalServer, start: Callable[[str], None]) -> LocalServer:
    """Do `what` to the hosts: cut H, kill H (then mend its link), start H, restart postgresql,
    partition H from postgresql, heal H. The database as it runs after it."""
    print(f"{time.strftime('%H:%M:%S')} {what}")
    words = what.split()
    if words[0] == "cut":
        hosts.cut(words[1])
    elif words[0] == "kill":
        hosts.kill(words[1])
        hosts.mend(words[1])
    elif words[0] == "start":
        start(words[1])
    elif what == "restart postgresql":
        database.stop()
        database = start_postgresql(
            database.datadir, database.port, init=False, host=database.host,
            netns=hosts.namespace("postgresql"),
        )  # fmt: skip
    elif words[0] == "partition":
        hosts.partition(words[1], words[3])
    elif words[0] == "heal":
        hosts.heal(words[1], "postgresql")
    else:
        raise ValueError(f"no such fault: {what}")
    return database
