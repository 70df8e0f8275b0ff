"""SIGHUP reloads the agent's config: devices and rules added, changed and removed take effect,
a broken config is refused while the old one runs on, and under QoS 1 load nothing is lost or
stored twice (the buffer and the MQTT session are the same throughout)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from linli.demo.servers import LocalServer, free_port_range
from support import influx1_create_db, influx1_query, start_sim, stop_process, unique, wait_for
from test_outages import Load, agent_config, camera_uptimes


def edge_toml(base: dict[str, Any], chargers: list[tuple[str, int]], limit: float | None = None) -> str:
    """The agent's config: the load's cameras, these charger stations, and a rule of its own."""
    w, m = base["writer"], base["mqtt"]
    out = [
        f'[agent]\nname = "{base["agent"]["name"]}"\n',
        f'[writer]\nkind = "influxdb1"\nurl = "{w["url"]}"\ndatabase = "{w["database"]}"\n'
        "flush_interval = 0.2\n",
        f'[mqtt]\nport = {m["port"]}\nclient_id = "{m["client_id"]}"\nhealth_interval = 1.0\n',
    ]
    if limit is not None:
        out.append(f'[[rules]]\nkind = "charger"\nfield = "temperature"\nabove = {limit}\nfor_s = 0\n')
    site = base["sites"][0]
    out.append(f'[[sites]]\nid = "{site["id"]}"\n')
    out += [f'[[sites.devices]]\nid = "{d["id"]}"\nprofile = "camera"\n' for d in site["devices"]]
    out += [
        f'[[sites.devices]]\nid = "{name}"\nprofile = "charger"\nport = {port}\n'
        # A health point at every poll: the test counts the polls in them.
        "interval = 0.3\ntimeout = 0.3\nhealth_every = 0.3\n"
        for name, port in chargers
    ]
    return "\n".join(out)


def polls(store: LocalServer, db: str, site: str, device: str) -> int:
    # Each poll writes a health point (the readings are stored by exception).
    q = f"SELECT count(polls) FROM health WHERE site = '{site}' AND device = '{device}'"
    rows = influx1_query(store.url, db, q)
    return int(rows[0]["count"]) if rows else 0


def stations(store: LocalServer, db: str, site: str) -> set[str]:
    rows = influx1_query(
        store.url, db, f"SELECT last(voltage) FROM charger WHERE site = '{site}' GROUP BY device"
    )
    return {r["device"] for r in rows}


def test_sighup_adds_removes_and_refuses_configs_under_load_losing_nothing(
    mosquitto: LocalServer, influx1: LocalServer, tmp_path: Path
) -> None:
    db, site = unique("reload"), unique("site")
    influx1_create_db(influx1.url, db)
    first = free_port_range(2)
    sim = start_sim("charger", "--port", str(first), "--stations", "2")
    writer = {"kind": "influxdb1", "url": influx1.url, "database": db}
    base = agent_config(writer, mosquitto.port, site)
    path = tmp_path / "edge.toml"
    path.write_text(edge_toml(base, [("station-1", first)]))
    log = tmp_path / "agent.log"
    load = Load(mosquitto.port, site, rate=100)
    with log.open("w") as out:
        agent = subprocess.Popen(
            [sys.executable, "-m", "linli.cli", "edge", "run", "--config", str(path)],
            stdout=out, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "LINLI_STATE_DIR": str(tmp_path)},
        )  # fmt: skip
    try:
        wait_for(lambda: stations(influx1, db, site) == {"station-1"}, "station-1 stored", 30)
        load.start(12)
        # 1. A station added, and a rule of the config's own (a lower temperature limit).
        path.write_text(edge_toml(base, [("station-1", first), ("station-2", first + 1)], limit=5))
        agent.send_signal(signal.SIGHUP)
        wait_for(lambda: stations(influx1, db, site) == {"station-1", "station-2"}, "station-2 stored", 30)
        # 2. A broken config: refused, the running one goes on.
        path.write_text(path.read_text().replace("[writer]", "[writer]\nbatch_size = -1"))
        agent.send_signal(signal.SIGHUP)
        wait_for(lambda: "the new config is refused" in log.read_text(), "the refusal", 15)
        assert agent.poll() is None
        # 3. station-1 removed: it is polled no more.
        path.write_text(edge_toml(base, [("station-2", first + 1)], limit=5))
        agent.send_signal(signal.SIGHUP)
        wait_for(lambda: "(0 added, 1 removed)" in log.read_text(), "the second reload", 15)
        load.join()
        wait_for(lambda: len(load.acked()) == load.sent, "the broker's acknowledgements", 30)
        wait_for(lambda: len(camera_uptimes(influx1, db, site)) >= load.sent, "every heartbeat stored", 30)
        before = polls(influx1, db, site, "station-1")
        two = polls(influx1, db, site, "station-2")
        wait_for(lambda: polls(influx1, db, site, "station-2") > two + 5, "station-2 polled on", 20)
        after = polls(influx1, db, site, "station-1")
    finally:
        stopped = stop_process(agent)
        load.close()
        stop_process(sim)
    assert stopped == 0, log.read_text()[-3000:]
    assert camera_uptimes(influx1, db, site) == list(range(load.sent))  # every one, once
    assert before == after  # station-1 polled no more
    alerts = influx1_query(
        influx1.url, db, f"SELECT * FROM alert WHERE site = '{site}' AND rule = 'charger.temperature.above'"
    )
    assert any(a["threshold"] == 5 for a in alerts), alerts[:3]  # the reloaded rule, at its new limit
    text = log.read_text()
    assert "reload: 22 devices (1 added, 0 removed)" in text
    assert "reload: 21 devices (0 added, 1 removed)" in text
    assert "batch_size" in text  # the refusal names the key
