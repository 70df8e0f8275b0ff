"""`linli edge scan` against the simulator's fire gateway (several unit ids, the rest silent),
cross-checked with mbpoll as an independent Modbus client."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from linli.demo.servers import free_port
from linli.edge.scan import parse_units
from support import linli, start_sim, stop_process

pytestmark = pytest.mark.servers  # every test here starts a server or a process

# One tower: its gateway has two pressure sensors (units 1 and 2) and a pump controller (unit 3).
SCENARIO = """
name = "scan"
seed = 3

[[sites]]
id = "tower"

[[groups]]
kind = "fire_pressure"
sites = ["tower"]
per_site = 2
id = "pressure-{n}"
gateway = "fire-gateway"
options = { system = "sprinkler" }

[[groups]]
kind = "fire_pump"
sites = ["tower"]
id = "pump-1"
gateway = "fire-gateway"
"""


def mbpoll(port: int, unit: int) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("mbpoll")
    if binary is None:
        pytest.fail("mbpoll is not installed: apt-get install -y mbpoll", pytrace=False)
    return subprocess.run(
        [binary, "-m", "tcp", "-p", str(port), "-a", str(unit), "-r", "1", "-c", "1", "-t", "4", "-1",
         "-o", "0.5", "127.0.0.1"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_the_scan_finds_the_gateway_s_units_and_tells_a_pressure_sensor_from_a_pump(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    port = free_port()
    sim = start_sim(
        "district", "--scenario", str(scenario), "--modbus-port", str(port), "--mqtt-port", str(free_port())
    )
    try:
        anyone = linli("edge", "scan", "--host", "127.0.0.1", "--port", str(port), "--units", "1-6")
        typed = linli(
            "edge",
            "scan",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--units",
            "1-6",
            "--profile",
            "fire_pressure",
        )
        as_json = linli(
            "edge", "scan", "--host", "127.0.0.1", "--port", str(port), "--units", "1-6",
            "--profile", "fire_pressure", "--json",
        )  # fmt: skip
        # The independent client agrees: unit 1 answers, unit 5 does not.
        assert mbpoll(port, 1).returncode == 0
        assert mbpoll(port, 5).returncode != 0
    finally:
        stop_process(sim)
    assert anyone.returncode == 0, anyone.stderr
    assert "3 of 6 units answered, 3 silent, 0 failed" in anyone.stdout
    assert re.findall(r"unit +(\d+): present", anyone.stdout) == ["1", "2", "3"]
    assert typed.returncode == 0, typed.stderr
    assert re.findall(r"unit +(\d+): decodes", typed.stdout) == ["1", "2"]
    unit3 = next(line for line in typed.stdout.splitlines() if line.startswith("unit   3"))
    assert "decodes" not in unit3  # the pump controller is not a pressure sensor
    # Not a terminal: the progress bar and the answers carry no escape codes.
    assert "\x1b" not in typed.stdout + typed.stderr + as_json.stdout
    # --json: the same verdicts, counts and tables, for a script.
    found = json.loads(as_json.stdout)
    assert as_json.returncode == 0, as_json.stderr
    assert [(u["unit"], u["answer"]) for u in found["units"]] == [
        (1, "decodes"),
        (2, "decodes"),
        (3, unit3.split()[2]),
    ]
    assert (found["asked"], found["answered"], found["silent"], found["failed"]) == (6, 3, 3, 0)
    assert found["config"] == typed.stdout.split("# paste under the site's [[sites]] table:\n")[1]
    # The tables it prints are a config the agent accepts, with the two sensors in it.
    snippet = typed.stdout.split("# paste under the site's [[sites]] table:\n")[1]
    config = tmp_path / "edge.toml"
    config.write_text(
        '[writer]\nkind = "influxdb1"\nurl = "http://127.0.0.1:8086"\ndatabase = "linli"\n\n'
        '[[sites]]\nid = "tower"\n\n' + snippet
    )
    assert [d["unit"] for d in tomllib.loads(config.read_text())["sites"][0]["devices"]] == [1, 2]
    checked = linli("edge", "check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr


def test_nobody_there_and_bad_ranges_are_told_clearly() -> None:
    closed = free_port()
    nobody = linli("edge", "scan", "--host", "127.0.0.1", "--port", str(closed), "--units", "1-3")
    assert nobody.returncode == 1
    assert "0 of 1 units answered, 0 silent, 1 failed" in nobody.stdout  # stops at the refusal
    bad = linli("edge", "scan", "--host", "127.0.0.1", "--units", "9-2")
    assert bad.returncode == 2
    assert "each id from 0 to 255, the range low to high" in bad.stderr
    assert parse_units("1,2,5-7,2") == [1, 2, 5, 6, 7]
