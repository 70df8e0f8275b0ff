"""`linli edge config new`: from flags, from a saved scan, and by answering questions in a terminal;
what it writes, `linli edge check` accepts."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from support import linli, wait_for
from test_watch import Terminal

pytestmark = pytest.mark.servers  # every test here starts a server or a process

SCAN_OUTPUT = """\
unit   1: decodes     13 values in range
unit   2: decodes     13 values in range
unit   3: present     answers, but not as a fire_pressure
2 of 3 units answered...

# paste under the site's [[sites]] table:
[[sites.devices]]
id = "fire_pressure-1"
profile = "fire_pressure"
host = "192.168.10.50"
port = 502
unit = 1

[[sites.devices]]
id = "fire_pressure-2"
profile = "fire_pressure"
host = "192.168.10.50"
port = 502
unit = 2
"""


def devices(path: Path) -> list[tuple[str, str, int | None]]:
    config = tomllib.loads(path.read_text())
    return [(d["id"], d["profile"], d.get("unit")) for d in config["sites"][0]["devices"]]


def test_from_flags_and_a_saved_scan_the_agent_accepts_it(tmp_path: Path) -> None:
    scan = tmp_path / "scan.txt"
    scan.write_text(SCAN_OUTPUT)
    out = tmp_path / "edge.toml"
    made = linli(
        "edge", "config", "new", "--site", "tower", "--from-scan", str(scan),
        "--device", "charger@192.168.10.21", "--device", "camera=elevator-1", "--out", str(out),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "site tower, 4 devices" in made.stdout
    assert devices(out) == [
        ("charger-1", "charger", None), ("elevator-1", "camera", None),
        ("fire_pressure-1", "fire_pressure", 1), ("fire_pressure-2", "fire_pressure", 2),
    ]  # fmt: skip
    assert tomllib.loads(out.read_text())["mqtt"]["host"] == "127.0.0.1"  # a camera: a broker
    checked = linli("edge", "check", "--config", str(out))
    assert checked.returncode == 0, checked.stderr
    tls = tmp_path / "tls.toml"
    made = linli(
        "edge", "config", "new", "--site", "tower", "--device", "camera=elevator-1",
        "--mqtt-host", "mqtt.district.example", "--mqtt-port", "8883", "--out", str(tls),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert tomllib.loads(tls.read_text())["mqtt"] == {"host": "mqtt.district.example", "port": 8883}
    bad_port = linli("edge", "config", "new", "--site", "t", "--mqtt-port", "88830", "--out", str(tls))
    assert bad_port.returncode == 2
    assert "argument --mqtt-port: 88830 is not a TCP port (1-65535)" in bad_port.stderr
    again = linli("edge", "config", "new", "--site", "tower", "--device", "charger@h", "--out", str(out))
    assert again.returncode == 2
    assert "exists; --force to replace it" in again.stderr


def test_bad_devices_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    out = tmp_path / "edge.toml"
    for spec, says in (
        ("charger", "a charger is read over Modbus: give @HOST"),
        ("toaster@h", "toaster"),
        ("charger@h:port", "write KIND@HOST[:PORT][/UNIT][=ID] or KIND=ID"),
    ):
        refused = linli("edge", "config", "new", "--site", "s", "--device", spec, "--out", str(out))
        assert refused.returncode == 2, spec
        assert says in refused.stderr, (spec, refused.stderr)
    assert not out.exists()


def test_a_technician_answers_the_questions_in_a_terminal(tmp_path: Path) -> None:
    out = tmp_path / "edge.toml"
    linli_bin = Path(sys.executable).parent / "linli"
    term = Terminal(f"{linli_bin} edge config new --out {out}; sleep 30")
    try:
        wait_for(lambda: "site id" in term.screen(), "the first question", 15)
        term.keys("ronghua-1")
        term.keys("Enter")
        wait_for(lambda: "device (KIND@HOST" in term.screen(), "the device question", 15)
        for answer in ("charger@192.168.10.21/1", "charger@:x", "charger@192.168.10.22/1=station-2", ""):
            if answer:
                term.keys(answer)
            term.keys("Enter")
        wait_for(out.exists, "the config written", 15)
        assert "write KIND@HOST" in term.screen()  # the malformed answer was refused, the rest kept
    finally:
        term.close()
    assert devices(out) == [("charger-1", "charger", 1), ("station-2", "charger", 1)]
    assert tomllib.loads(out.read_text())["sites"][0]["id"] == "ronghua-1"
