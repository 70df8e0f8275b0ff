"""Cameras, trucks and rescue points -> real Mosquitto -> edge agent -> real InfluxDB 1.x.

The district simulator journals every message it publishes; each must be stored, field
by field, at the device's own timestamp, and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from linli.catalog.profile import get_profile
from linli.catalog.scenario import load_scenario
from linli.cloud.broker.files import read_secret
from linli.demo.servers import LocalServer, free_port, start_mosquitto_with
from linli.edge.agent import Agent
from linli.edge.config import EdgeConfig
from linli.edge.topics import TopicRouter
from linli.sim.edgeconfig import district_edge_config
from support import influx1_create_db, influx1_query, linli, start_sim, stop_process, unique, wait_until

GTFS = Path(__file__).parents[2] / "deploy" / "gtfs" / "hongqiao"
SCENARIO = """
name = "e2e"
seed = 5

[[sites]]
id = "tower"

[[sites]]
id = "compound"

[[sites]]
id = "fleet"

[[groups]]
kind = "camera"
sites = ["tower"]
per_site = 2
id = "elevator-{n}"
interval = 30

[[groups]]
kind = "rescue_point"
sites = ["compound"]
id = "rescue-1"

[[groups]]
kind = "truck"
sites = ["fleet"]
id = "truck-wet-north"
"""


def journal_lines(path: Path) -> list[dict[str, Any]]:
    """The journal's whole lines: read while the simulator writes, the last may be half written."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]


def expected_points(
    journal: list[dict[str, Any]],
) -> dict[tuple[str, str, int, tuple[str, ...]], dict[str, Any]]:
    """(measurement, device, time, tag values) -> fields, as the journal says they must be stored."""
    router = TopicRouter([get_profile(k) for k in ("camera", "truck", "rescue_point")])
    out: dict[tuple[str, str, int, tuple[str, ...]], dict[str, Any]] = {}
    for entry in journal:
        matched = router.match(entry["topic"])
        assert matched is not None, entry["topic"]
        route, levels = matched
        assert route.message is not None
        payload = dict(entry["payload"])
        time_ms = payload.pop(route.message.time_key)
        tags = tuple(str(payload.pop(f.name)) for f in route.message.fields if f.tag)
        key = (route.profile.measurement, levels["device"], time_ms, tags)
        out.setdefault(key, {}).update(payload)
    return out


def run_district(
    mosquitto: LocalServer | None,
    influx1: LocalServer,
    tmp_path: Path,
    *,
    db: str,
    sim_args: list[str],
    enough: tuple[Callable[[list[dict[str, Any]]], bool], str],
    mqtt: dict[str, Any] | None = None,
    port: int | None = None,
    before: Callable[[Path, str], None] | None = None,
) -> tuple[Agent, Path]:
    """The small district's simulator through Mosquitto into an agent and InfluxDB 1.x, until
    its journal has `enough`; the agent once it stored every message journalled.

    `mqtt` adds to the agent's [mqtt] table (credentials, TLS); `port`: the broker's port for
    both, when not `mosquitto`'s; `before(edge config file, agent name)` runs before the agent."""
    influx1_create_db(influx1.url, db)
    scenario_path = tmp_path / "scenario.toml"
    # The trucks run the district's timetable.
    scenario_path.write_text(f"timetable = {str(GTFS)!r}\n" + SCENARIO)
    port = port or (mosquitto.port if mosquitto else 1883)
    name = unique("agent")
    text = district_edge_config(
        load_scenario(scenario_path),
        writer={"kind": "influxdb1", "url": influx1.url, "database": db, "flush_interval": 0.2},
        mqtt_port=port,
        agent=name,
        health_interval=0.5,
    )
    (tmp_path / "edge.toml").write_text(text)
    if before is not None:
        before(tmp_path / "edge.toml", name)
    data = tomllib.loads(text)
    data["mqtt"].update(mqtt or {})
    config = EdgeConfig.model_validate(data)
    journal = tmp_path / "journal.jsonl"
    condition, what = enough

    async def scenario() -> Agent:
        agent = Agent(config)
        assert agent.mqtt is not None
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await wait_until(agent.mqtt.subscribed.is_set, 10, "the agent's subscriptions")
        args = [
            "--scenario",
            str(scenario_path),
            "--mqtt-port",
            str(port),
            "--journal",
            str(journal),
        ]
        sim = start_sim("district", *args, *sim_args)
        try:
            await wait_until(lambda: condition(journal_lines(journal)), 60, what)
        finally:
            assert stop_process(sim) == 0
        published = len(journal_lines(journal))
        await wait_until(
            lambda: agent.mqtt is not None and agent.mqtt.stored >= published, 20, "every message"
        )
        stop.set()
        assert await task
        return agent

    return asyncio.run(scenario()), journal


def test_every_published_message_is_stored_field_by_field(
    mosquitto: LocalServer, influx1: LocalServer, tmp_path: Path
) -> None:
    db = unique("mqtt")
    # Enough simulated time for lifts at several stops and camera episodes.
    agent, journal = run_district(
        mosquitto,
        influx1,
        tmp_path,
        db=db,
        sim_args=[
            "--time-scale",
            "120",
            "--start",
            "2026-11-27T06:20+08:00",  # a Friday; the first wet-waste trip leaves at 06:30
            "--fault",
            "tower/elevator-1:burst",
        ],
        enough=(lambda entries: sum(e["topic"].endswith("/lift") for e in entries) >= 2, "two bin lifts"),
    )
    assert agent.mqtt is not None
    assert sum(agent.mqtt.dead_letters.values()) == 0, agent.mqtt.dead_letters
    entries = journal_lines(journal)
    assert agent.mqtt.stored == len(entries)
    expected = expected_points(entries)
    measurements = {"camera": ("object",), "truck": ("waste_type", "route"), "rescue_point": ()}
    stored: dict[tuple[str, str, int, tuple[str, ...]], dict[str, Any]] = {}
    for measurement, tag_keys in measurements.items():
        for row in influx1_query(influx1.url, db, f'SELECT * FROM "{measurement}"'):
            tags = tuple(row[k] for k in tag_keys if row.get(k) is not None)
            stored[(measurement, row["device"], row["time"], tags)] = row
    assert set(stored) == set(expected)
    for key, fields in expected.items():
        row = stored[key]
        for name, value in fields.items():
            assert row[name] == value, (key, name, row[name], value)
    # Every detection the camera itself counted as an interception is one the edge confirmed.
    detections = [row for key, row in stored.items() if key[0] == "camera" and key[3] == ("ebike",)]
    warnings = [r for r in detections if r["action"] == "voice_warning"]
    assert len(warnings) >= 3
    assert all(r["interception"] == 1 and r["confirmed"] is True for r in warnings)
    assert sum(r["interception"] for r in detections) == len(warnings)
    assert all(r["confirmed"] is False for r in detections if r["action"] == "none")
    # The trucks' lifts carry the waste type and route as tags.
    lifts = [row for key, row in stored.items() if key[0] == "truck" and row.get("bins") is not None]
    assert lifts
    assert {(r["waste_type"], r["route"]) for r in lifts} == {("wet", "wet-north")}
    health = influx1_query(
        influx1.url, db, "SELECT last(online) FROM health WHERE kind = 'camera' GROUP BY device"
    )
    assert {r["device"] for r in health} == {"elevator-1", "elevator-2"}


def test_a_compressed_district_runs_without_its_clocks_running_ahead_of_the_edge(
    mosquitto: LocalServer, influx1: LocalServer, tmp_path: Path
) -> None:
    """The README's recipe, faster: at x3600 each real second is a simulated hour, so device
    clocks started at the present would be refused as bad_time within the first second."""
    # Simulated hours pass: trucks drive, cameras beat, well past an hour of device time.
    agent, journal = run_district(
        mosquitto,
        influx1,
        tmp_path,
        db=unique("compressed"),
        sim_args=["--time-scale", "3600"],
        enough=(lambda entries: len(entries) >= 200, "200 messages"),
    )
    assert agent.mqtt is not None
    assert dict(agent.mqtt.dead_letters) == {}
    times = [e["payload"]["ts"] for e in journal_lines(journal)]  # every kind's time key
    assert max(times) - min(times) > 3_600_000  # more than an hour of device time went by
    assert max(times) <= time.time() * 1000  # and it is all behind the wall clock


def test_the_district_runs_under_its_own_identities_over_tls(
    influx1: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`linli broker config` and `linli broker certs` for this district: each device connects as
    itself, the agent as itself, all over TLS; nothing refused, everything stored."""
    certs, conf = tmp_path / "certs", tmp_path / "broker"
    plain, tls = free_port(), free_port()
    brokers: list[LocalServer] = []

    def start_broker(edge_config: Path, agent: str) -> None:
        assert linli("broker", "certs", "--out", str(certs)).returncode == 0
        made = linli(
            "broker", "config", "--edge-config", str(edge_config), "--out", str(conf),
            "--bind", "127.0.0.1", "--port", str(plain), "--certs", str(certs), "--tls-port", str(tls),
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        brokers.append(start_mosquitto_with(tmp_path / "data", conf / "mosquitto.conf", plain))
        monkeypatch.setenv("E2E_MQTT_USERNAME", f"edge/{agent}")
        monkeypatch.setenv("E2E_MQTT_PASSWORD", read_secret(conf, f"edge/{agent}"))

    try:
        agent, journal = run_district(
            None,
            influx1,
            tmp_path,
            db=unique("identities"),
            sim_args=[
                "--time-scale", "600", "--mqtt-identities", str(conf / "secrets" / "identities.json"),
                "--mqtt-ca", str(certs / "ca.crt"),
            ],
            enough=(lambda entries: len(entries) >= 100, "100 messages"),
            mqtt={
                "username_env": "E2E_MQTT_USERNAME", "password_env": "E2E_MQTT_PASSWORD",
                "tls": {"ca": str(certs / "ca.crt")},
            },
            port=tls,
            before=start_broker,
        )  # fmt: skip
    finally:
        for b in brokers:
            b.stop()
    assert agent.mqtt is not None
    assert dict(agent.mqtt.dead_letters) == {}
    assert agent.mqtt.stored == len(journal_lines(journal)) >= 100
    # Over TLS, PUBLISH packets are still decoded in batches, not one by one by paho.
    assert agent.mqtt.by_paho < agent.mqtt.received / 2
