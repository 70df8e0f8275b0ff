"""Simulated stations -> edge agent -> real stores, every stored value checked.

The simulator runs with a frozen clock after a seeded warm-up, so the test can build the
same stations itself and know every register the agent must read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from linli.catalog.profile import get_profile
from linli.catalog.registers import Value
from linli.demo.servers import LocalServer, free_port_range
from linli.edge.agent import Agent
from linli.edge.config import EdgeConfig
from linli.sim.fleet import ChargerFleetSpec, make_station
from support import (
    expected_fields,
    influx1_create_db,
    influx1_query,
    start_sim,
    stop_process,
    unique,
    vm_series_settled,
    wait_until,
)

START = "2021-01-08T21:00+08:00"
WARMUP = 3 * 3600
SEED = 7
STATIONS = 3
POLLS = 5
# Read at the first poll and every SETTINGS_S after (60 s: once in these tests).
SETTINGS = {point.field for _, point in get_profile("charger").modbus_points(1) if point.setting}
# Stored by exception, unless the test stores every poll.
BANDED = {point.field for _, point in get_profile("charger").modbus_points(1) if point.deadband is not None}


def expected(ports: int) -> dict[str, dict[int | None, dict[str, Value]]]:
    """device id -> channel -> field -> value, from our own copy of the simulated stations."""
    spec = ChargerFleetSpec(stations=STATIONS, ports=ports, seed=SEED, warmup_s=WARMUP)
    at = dt.datetime.fromisoformat(START).timestamp()
    profile = get_profile("charger")
    return {
        f"charger-{i}": expected_fields(profile, make_station(spec, i, at).values(), ports)
        for i in range(1, STATIONS + 1)
    }


@pytest.fixture(scope="module", params=[10, 12], ids=["10-ports", "12-ports"])
def stations(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    """A frozen fleet; yields (first TCP port, ports per station)."""
    ports: int = request.param
    first = free_port_range(STATIONS)
    proc = start_sim(
        "charger",
        "--port",
        str(first),
        "--stations",
        str(STATIONS),
        "--ports",
        str(ports),
        "--seed",
        str(SEED),
        "--start",
        START,
        "--warmup",
        str(WARMUP),
        "--time-scale",
        "0",
    )
    yield first, ports
    assert stop_process(proc) == 0


def config(
    writer: dict[str, Any], site: str, first: int, ports: int, *, every_poll: bool = True
) -> EdgeConfig:
    """Every poll stored unless `every_poll` is false (then by exception, as the profile says)."""
    devices = [
        {
            "id": f"charger-{i}",
            "profile": "charger",
            "port": first + i - 1,
            "count": ports,
            "interval": 0.2,
            "timeout": 0.2,
            "report_by_exception": not every_poll,
        }
        for i in range(1, STATIONS + 1)
    ]
    return EdgeConfig.model_validate(
        {"writer": {"flush_interval": 0.2, **writer}, "sites": [{"id": site, "devices": devices}]}
    )


async def run_agent(agent: Agent, polls: int) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await wait_until(lambda: all(p.health.polls >= polls for p in agent.pollers), 30, "polls")
    stop.set()
    assert await task, "the agent did not write everything before stopping"


@pytest.mark.parametrize("every_poll", [True, False], ids=["every-poll", "by-exception"])
def test_stations_into_victoriametrics(
    victoria: LocalServer, stations: tuple[int, int], every_poll: bool
) -> None:
    first, ports = stations
    site = unique("vm")
    writer = {"kind": "influxdb2", "url": victoria.url, "org": "linli", "bucket": "linli"}
    agent = Agent(config(writer, site, first, ports, every_poll=every_poll))
    asyncio.run(run_agent(agent, POLLS))

    polls = {p.device.id: p.health.polls for p in agent.pollers}
    assert all(p.health.errors == Counter() for p in agent.pollers)
    assert agent.writer.stats.written == agent.totals.lines
    # Every poll gives a line for the station and one per port; by exception, only the first
    # poll gives them all. Health points are not readings.
    every_line = sum(polls.values()) * (1 + ports)
    if every_poll:
        assert agent.totals.readings == every_line
    else:
        assert STATIONS * (1 + ports) <= agent.totals.readings < every_line

    want = expected(ports)

    # Settings (limits, setpoints) are read at the first poll and every SETTINGS_S after. By
    # exception, the frozen stations' values are stored once: nothing moves, no heartbeat is due.
    def points(device: str, field: str) -> int:
        return 1 if field in SETTINGS or (field in BANDED and not every_poll) else polls[device]

    samples = sum(points(d, f) for d in want for fields in want[d].values() for f in fields)
    found: dict[tuple[str, int | None, str], dict[str, Any]] = {}
    for series in vm_series_settled(victoria.url, "charger_.*", site, samples):
        labels = series["metric"]
        field = labels["__name__"].removeprefix("charger_")
        channel = int(labels["port"]) if "port" in labels else None
        key = (labels["device"], channel, field)
        assert key not in found, f"series {key} appears twice"
        found[key] = series
    expected_keys = {(d, ch, f) for d, chans in want.items() for ch, fields in chans.items() for f in fields}
    assert set(found) == expected_keys, "missing or unexpected series"
    assert len(found) == STATIONS * (9 + 7 * ports)
    for (device, channel, field), series in found.items():
        stamps = series["timestamps"]
        assert len(stamps) == len(set(stamps)), f"{device} {channel} {field}: duplicated points"
        assert len(stamps) == points(device, field), f"{device} {channel} {field}: missing points"
        value = want[device][channel][field]
        assert series["values"] == [float(value)] * len(stamps), (device, channel, field)

    # The sim's evening: some ports are charging, with power on them.
    states = [want[d][ch]["state"] for d in want for ch in want[d] if ch is not None]
    assert 0 < states.count(1) < len(states)

    # The health points the agent counted (apart from its readings) are the ones stored; by
    # exception they are fewer than polls.
    health_lines = agent.totals.device_health
    online = vm_series_settled(victoria.url, "health_online", site, health_lines)
    assert sum(len(s["timestamps"]) for s in online) == health_lines
    assert (health_lines == sum(polls.values())) == every_poll
    assert len(online) == STATIONS
    assert all(set(s["values"]) == {1.0} for s in online)
    held_back = {p.device.id: p.report.suppressed for p in agent.pollers}
    live = BANDED - SETTINGS
    if every_poll:
        assert held_back == dict.fromkeys(want, 0)
    else:  # every live value of every poll after the first
        assert held_back == {
            d: (polls[d] - 1) * sum(len(set(f) & live) for f in want[d].values()) for d in want
        }


def test_stations_into_influxdb1(influx1: LocalServer, stations: tuple[int, int]) -> None:
    first, ports = stations
    site, db = unique("i1"), "linli"
    influx1_create_db(influx1.url, db)
    agent = Agent(config({"kind": "influxdb1", "url": influx1.url, "database": db}, site, first, ports))
    asyncio.run(run_agent(agent, POLLS))
    polls = {p.device.id: p.health.polls for p in agent.pollers}

    want = expected(ports)
    rows = influx1_query(influx1.url, db, f"SELECT * FROM charger WHERE site = '{site}'")
    per_series: Counter[tuple[str, int | None]] = Counter()
    with_settings: Counter[str] = Counter()
    for row in rows:
        channel = int(row["port"]) if row.get("port") else None
        device = row["device"]
        per_series[(device, channel)] += 1
        wanted = want[device][channel]
        stored = {k: v for k, v in row.items() if k in wanted and v is not None}
        # Settings come with the first poll (and every SETTINGS_S): a row has all or none.
        with_settings[device] += set(stored) >= SETTINGS
        assert stored == {k: v for k, v in wanted.items() if k not in SETTINGS or k in stored}, (
            device,
            channel,
        )
    assert per_series == Counter({(d, ch): polls[d] for d in want for ch in want[d]})
    assert with_settings == Counter(dict.fromkeys(want, 1))

    # Integer fields must be stored as integers, or InfluxDB refuses later writes of the series.
    types = {
        r["fieldKey"]: r["fieldType"] for r in influx1_query(influx1.url, db, "SHOW FIELD KEYS FROM charger")
    }
    sample = want["charger-1"]
    for fields in (sample[None], sample[1]):
        for field, value in fields.items():
            assert types[field] == ("integer" if isinstance(value, int) else "float"), field

    health = influx1_query(influx1.url, db, f"SELECT online, errors FROM health WHERE site = '{site}'")
    assert len(health) == sum(polls.values())
    assert {(r["online"], r["errors"]) for r in health} == {(1, 0)}
