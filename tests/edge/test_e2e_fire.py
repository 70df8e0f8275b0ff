"""A high-rise building's fire sensors behind one RS485-to-TCP gateway -> agent -> InfluxDB 1.x.

The district simulator runs frozen; the test builds the same sensors itself and knows
every value the agent must store. One transmitter has a broken 4-20 mA loop: it must be
stored as a sensor fault, with no pressure. mbpoll reads the same unit ids independently.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from linli.catalog.derive import finish_device_row
from linli.catalog.profile import get_profile
from linli.catalog.registers import Value
from linli.catalog.scenario import expand, load_scenario
from linli.demo.servers import LocalServer, free_port, require_binary
from linli.edge.agent import Agent
from linli.edge.config import EdgeConfig
from linli.sim.context import kind_module
from linli.sim.district import context
from linli.sim.edgeconfig import district_edge_config
from support import (
    expected_fields,
    influx1_create_db,
    influx1_query,
    start_sim,
    stop_process,
    unique,
    wait_until,
)

START = "2021-01-11T10:02:00+08:00"  # a Monday morning: the weekly pump test is running
SCENARIO = """
name = "fire"
seed = 11

[[sites]]
id = "tower"

[[groups]]
kind = "fire_pressure"
sites = ["tower"]
id = "sprinkler-{n}"
gateway = "gw"
tags = { system = "sprinkler" }
options = { system = "sprinkler" }

[[groups]]
kind = "fire_pressure"
sites = ["tower"]
id = "hydrant-{n}"
gateway = "gw"
tags = { system = "hydrant" }
options = { system = "hydrant" }

[[groups]]
kind = "fire_level"
sites = ["tower"]
id = "tank-{n}"
gateway = "gw"

[[groups]]
kind = "fire_pump"
sites = ["tower"]
per_site = 2
id = "pump-{n}"
gateway = "gw"

[[groups]]
kind = "fire_point"
sites = ["tower"]
per_site = 2
id = "smoke-{n}"
gateway = "gw"
"""
FAULTS = ["tower/hydrant-1:sensor_fault", "tower/pump-2:pump_fault", "tower/smoke-2:alarm"]
POLLS = 3


@pytest.fixture(scope="module")
def building(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    path = tmp_path_factory.mktemp("fire") / "scenario.toml"
    path.write_text(SCENARIO)
    port = free_port()
    args = [
        "district",
        "--scenario",
        str(path),
        "--modbus-port",
        str(port),
        "--time-scale",
        "0",
        "--start",
        START,
    ]
    for fault in FAULTS:
        args += ["--fault", fault]
    proc = start_sim(*args)
    yield path, port
    assert stop_process(proc) == 0


def expected(path: Path) -> dict[str, dict[str, Value]]:
    scenario = load_scenario(path)
    at = dt.datetime.fromisoformat(START).timestamp()
    faults = {f.partition(":")[0].split("/")[1]: frozenset({f.rpartition(":")[2]}) for f in FAULTS}
    out = {}
    for placed in expand(scenario):
        model = kind_module(placed.kind).make(
            context(scenario, placed, at, faults.get(placed.device, frozenset()))
        )
        profile = get_profile(placed.kind)
        assert profile.modbus is not None
        raw = expected_fields(profile, model.values(), 1)[None]
        out[placed.device], _ = finish_device_row(profile.modbus, raw)
    return out


def test_fire_sensors_behind_one_gateway(influx1: LocalServer, building: tuple[Path, int]) -> None:
    path, port = building
    db = unique("fire")
    influx1_create_db(influx1.url, db)
    text = district_edge_config(
        load_scenario(path),
        writer={"kind": "influxdb1", "url": influx1.url, "database": db, "flush_interval": 0.2},
        modbus_port=port,
    )
    config = EdgeConfig.model_validate(tomllib.loads(text.replace("interval = 2", "interval = 0.3")))
    agent = Agent(config)
    assert len(agent.endpoints) == 1, "all sensors share the gateway's one connection"

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await wait_until(lambda: all(p.health.polls >= POLLS for p in agent.pollers), 30, "polls")
        stop.set()
        assert await task

    asyncio.run(run())
    assert all(not p.health.errors for p in agent.pollers), {p.name: p.health.errors for p in agent.pollers}
    want = expected(path)
    assert want["sprinkler-1"]["sensor_fault"] is False
    assert 0.43 <= float(want["sprinkler-1"]["pressure"]) <= 0.47
    assert want["hydrant-1"] == {"loop_current": 2.1, "sensor_fault": True}
    assert want["pump-1"]["state"] == 1
    assert want["pump-2"]["state"] == 2
    assert want["smoke-2"]["alarm"] == 1
    for measurement in ("fire_pressure", "fire_level", "fire_pump", "fire_point"):
        rows = influx1_query(influx1.url, db, f'SELECT * FROM "{measurement}"')
        assert rows, measurement
        for row in rows:
            wanted = want[row["device"]]
            stored = {
                k: v
                for k, v in row.items()
                if v is not None and k not in ("time", "device", "site", "system")
            }
            assert stored == wanted, row["device"]
    tags = influx1_query(influx1.url, db, 'SHOW TAG VALUES FROM "fire_pressure" WITH KEY = "system"')
    assert {r["value"] for r in tags} == {"sprinkler", "hydrant"}


@pytest.mark.servers
def test_mbpoll_reads_each_unit_behind_the_gateway(building: tuple[Path, int]) -> None:
    path, port = building
    want = expected(path)
    units = {p.device: p.unit for p in expand(load_scenario(path))}
    # Holding registers 3 (decimals) and 4 (raw value) of the sprinkler transmitter, zero-based.
    result = subprocess.run(
        [
            require_binary("mbpoll"),
            "-m",
            "tcp",
            "-a",
            str(units["sprinkler-1"]),
            "-0",
            "-1",
            "-o",
            "2",
            "-t",
            "4",
            "-r",
            "3",
            "-c",
            "2",
            "-p",
            str(port),
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    decimals, raw = (int(v) for v in re.findall(r"^\[\d+\]:\s+(-?\d+)", result.stdout, flags=re.MULTILINE))
    assert decimals == 3
    # value = (raw + offset) / 10^decimals; the offset is a few counts.
    assert abs(raw / 1000 - float(want["sprinkler-1"]["pressure"])) <= 0.004
