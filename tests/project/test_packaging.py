"""The base install is an edge box's: in a fresh venv with only it, the agent runs end to end,
FastAPI and the Grafana libraries are not there, and the commands that need them say which
extra to install."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

from linli.demo.servers import LocalServer, free_port
from support import influx1_create_db, influx1_query, stop_process, unique, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_the_base_install_runs_the_edge_and_nothing_central(
    influx1: LocalServer, mosquitto: LocalServer, tmp_path: Path
) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), str(ROOT)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    linli = str(env_dir / "bin" / "linli")
    present = subprocess.run(
        [str(python), "-c",
         "import importlib.util as u; print(sorted(m for m in ('fastapi', 'uvicorn', 'grafana_client', "
         "'grafana_foundation_sdk', 'niquests', 'vroom', 'matplotlib', 'sqlalchemy', 'alembic', 'psycopg') "
         "if u.find_spec(m)))"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert present.stdout.strip() == "[]"
    # The central services' schema revisions ship in the package (found by path, not imported).
    shipped = subprocess.run(
        [str(python), "-c",
         "import importlib.resources as r; "
         "print(*(p.name for p in (r.files('linli.cloud.migrations') / 'versions').iterdir()))"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert {"0001_notifier.py", "0002_ordered_logs.py"} <= set(shipped.stdout.split())
    # And the message catalogs: what people read is rendered from them.
    catalogs = subprocess.run(
        [str(python), "-c",
         "import importlib.resources as r; "
         "print(*(p.name for p in r.files('linli.catalog').joinpath('locales/zh_CN/LC_MESSAGES')"
         ".iterdir()))"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert {"linli.po", "alerts.po", "waste.po"} <= set(catalogs.stdout.split())
    # A charger and the agent, both from the base install, into a real InfluxDB 1.x.
    db = unique("base")
    influx1_create_db(influx1.url, db)
    port = free_port()
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[agent]\nname = "{unique("base")}"\n\n[writer]\nkind = "influxdb1"\nurl = "{influx1.url}"\n'
        f'database = "{db}"\nflush_interval = 0.2\n\n[[sites]]\nid = "s"\n'
        f'[[sites.devices]]\nid = "station-1"\nprofile = "charger"\nport = {port}\ninterval = 0.5\n'
    )
    env = {**os.environ, "LINLI_STATE_DIR": str(tmp_path)}
    sim = subprocess.Popen(
        [linli, "sim", "charger", "--port", str(port), "--stations", "1"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert sim.stdout is not None
    assert "linli sim" in sim.stdout.readline()  # said once the station listens
    agent = subprocess.Popen([linli, "edge", "run", "--config", str(config)], env=env, text=True)
    try:
        wait_for(
            lambda: bool(influx1_query(influx1.url, db, 'SELECT count(voltage) FROM "charger"')),
            "readings from the base install's agent",
            60,
        )
    finally:
        assert stop_process(agent) == 0
        stop_process(sim)
    # The district simulator too: its trucks drive the timetable's roads.
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(
        f"timetable = {str(ROOT / 'deploy' / 'gtfs' / 'hongqiao')!r}\n"
        'name = "base"\nseed = 1\n[[sites]]\nid = "fleet"\n'
        '[[groups]]\nkind = "truck"\nsites = ["fleet"]\nid = "truck-renovation"\n'
    )
    district = subprocess.Popen(
        [linli, "sim", "district", "--scenario", str(scenario), "--modbus-port", str(free_port()),
         "--mqtt-port", str(mosquitto.port), "--time-scale", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert district.stdout is not None
    said = district.stdout.readline()
    stop_process(district)
    assert "linli sim district" in said, district.stderr.read() if district.stderr else ""
    # What the base install cannot do, it says how to get.
    notifier = tmp_path / "notifier.toml"
    notifier.write_text(f'state = "{tmp_path / "n.sqlite"}"\n')
    for args, extra in (
        (["cloud", "run", "--config", str(notifier)], "cloud"),
        (["dashboards", "build", "--out", str(tmp_path / "json")], "dashboards"),
        (["broker", "certs", "--out", str(tmp_path / "certs")], "cloud"),
    ):
        refused = subprocess.run(
            [linli, *args], capture_output=True, text=True, timeout=60, check=False,
            env={**env, "LINLI_CLOUD_TOKEN": "t"},
        )  # fmt: skip
        assert refused.returncode == 2, (args, refused.stderr)
        assert f"pip install 'linli[{extra}]'" in refused.stderr, (args, refused.stderr)
