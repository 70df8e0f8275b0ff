"""Config and profile errors name the file, the key and what was expected."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from linli.catalog.errors import ConfigError
from linli.catalog.profile import builtin_profile_dir, load_profile
from linli.demo.servers import free_port
from linli.edge.config import WriterKind, load_config
from support import linli, start_sim, stop_process

GOOD = """
[writer]
kind = "influxdb2"
url = "http://127.0.0.1:8086"
org = "linli"
bucket = "linli"

[[sites]]
id = "ronghua"

[[sites.devices]]
id = "charger-01"
profile = "charger"
port = 5020
"""


def write(tmp_path: Path, text: str, name: str = "edge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    return info.value.problems


def test_a_good_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.writer.kind is WriterKind.INFLUXDB2
    [(site, device)] = config.devices()
    assert (site.id, device.id, device.port, device.interval) == ("ronghua", "charger-01", 5020, 1.0)


def test_unknown_key_names_the_key_and_the_allowed_ones(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, GOOD.replace("port = 5020", "prot = 5020")))
    assert "sites[0].devices[0].prot" in problem
    assert "unknown key" in problem
    assert "port" in problem.split("allowed keys here:")[1]


def test_wrong_type_says_what_was_expected(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, GOOD.replace("port = 5020", 'port = "fifty"')))
    assert "sites[0].devices[0].port" in problem
    assert "integer" in problem
    assert "'fifty'" in problem


def test_unknown_profile_lists_the_kinds(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, GOOD.replace('profile = "charger"', 'profile = "chargr"')))
    assert "sites[0].devices[0].profile" in problem
    assert "charger" in problem


def test_writer_needs_its_target(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, GOOD.replace('kind = "influxdb2"', 'kind = "influxdb1"')))
    assert "database" in problem


def test_semantic_errors(tmp_path: Path) -> None:
    text = GOOD + '\n[[sites.devices]]\nid = "charger-01"\nprofile = "charger"\ncount = 13\n'
    found = problems(write(tmp_path, text))
    assert any("appears twice" in p for p in found)
    assert any("count" in p and "max_count 12" in p for p in found)


def test_timeout_longer_than_interval(tmp_path: Path) -> None:
    [problem] = problems(
        write(tmp_path, GOOD.replace("port = 5020", "port = 5020\ninterval = 1\ntimeout = 2"))
    )
    assert "timeout" in problem


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in problems(write(tmp_path, "[writer"))[0]
    assert "cannot read" in problems(tmp_path / "absent.toml")[0]


def test_profile_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    text = (builtin_profile_dir() / "charger.toml").read_text(encoding="utf-8")
    path = write(
        tmp_path, text.replace('scale = 0.1\nunit = "V"', 'scael = 0.1\nunit = "V"', 1), "charger.toml"
    )
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    [problem] = info.value.problems
    assert "modbus.points[0].scael" in problem
    assert "scale" in problem


def test_profile_overlapping_registers_are_refused(tmp_path: Path) -> None:
    text = (builtin_profile_dir() / "charger.toml").read_text(encoding="utf-8")
    # cabinet_temp moved onto voltage's register
    path = write(
        tmp_path,
        text.replace(
            'field = "cabinet_temp"\nregister = "input"\naddress = 1',
            'field = "cabinet_temp"\nregister = "input"\naddress = 0',
        ),
        "charger.toml",
    )
    with pytest.raises(ConfigError, match="overlaps"):
        load_profile(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('field = "cabinet_temp"\nabove = 60', 'field = "cabinet_tmp"\nabove = 60', "no such field"),
        ("above = 60\n", "above = 60\nbelow = 10\n", "exactly one of above and below"),
    ],
)
def test_profile_thresholds_name_a_stored_field_and_one_side(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    text = (builtin_profile_dir() / "charger.toml").read_text(encoding="utf-8")
    assert old in text
    path = write(tmp_path, text.replace(old, new), "charger.toml")
    with pytest.raises(ConfigError, match=message):
        load_profile(path)


def test_thresholds_apply_by_tag_and_side() -> None:
    profile = load_profile(builtin_profile_dir() / "fire_pressure.toml")
    [sprinkler, fault] = profile.thresholds_for({"system": "sprinkler"})
    assert (sprinkler.field, sprinkler.value, fault.field) == ("pressure", 0.10, "sensor_fault")
    assert sprinkler.breached(0.09)
    assert not sprinkler.breached(0.10)
    assert [t.value for t in profile.thresholds_for({"system": "hydrant"}) if t.field == "pressure"] == [0.07]


@pytest.mark.servers
def test_cli_reports_config_errors_with_exit_code_2(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("port = 5020", "prot = 5020"))
    result = linli("edge", "run", "--config", str(path))
    assert result.returncode == 2
    assert "sites[0].devices[0].prot" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.servers
def test_cli_help_and_usage_errors() -> None:
    ok = linli("--help")
    assert ok.returncode == 0
    for area in ("demo", "edge", "sim", "catalog", "dashboards", "cloud", "waste"):
        assert area in ok.stdout
    bad = linli("edge")
    assert bad.returncode == 2
    assert "COMMAND" in bad.stderr


@pytest.mark.servers
def test_check_shows_the_rules_in_force_and_each_interlock(tmp_path: Path) -> None:
    rules = """
[[rules]]
kind = "charger"
field = "temperature"
device = "charger-01"
above = 80

[[interlocks]]
field = "smoke_alarm"
above = 0.5
"""
    path = write(tmp_path, GOOD.replace("[[sites]]", rules + "\n[[sites]]"))
    result = linli("edge", "check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "rule charger.temperature.above" in out
    assert "above 90 for all" in out  # the profile's default
    assert "above 80 for charger-01" in out  # the override
    assert "interlock ronghua/charger-01" in out
    assert "smoke_alarm > 0.5 -> stop every port" in out
    assert "alerts: stored in 'alert'; not published" in out  # no broker configured
    assert "stored by exception: 15 fields, at least every 120 s; deadbands cabinet_temp 0.5," in out


@pytest.mark.servers
def test_probe_says_what_is_wrong_in_one_line() -> None:
    camera = linli("edge", "probe", "--profile", "camera", "--host", "127.0.0.1")
    assert camera.returncode == 2
    assert camera.stderr.splitlines() == [
        "linli edge probe: 'camera' is an MQTT device, not Modbus; watch its messages with: "
        "mosquitto_sub -h BROKER -t 'elevators/#' -v"
    ]
    unknown = linli("edge", "probe", "--profile", "chargr", "--host", "127.0.0.1")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("linli edge probe: no profile 'chargr'; known kinds: camera, charger")
    dns = linli("edge", "probe", "--profile", "charger", "--host", "no-such-host.invalid")
    assert dns.returncode == 1
    assert "NO ANSWER (unresolved)" in dns.stderr


def probe_charger(port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    """`linli edge probe` of a charger on this machine, as a technician types it."""
    return linli("edge", "probe", "--profile", "charger", "--host", "127.0.0.1", "--port", str(port), *extra)


@pytest.mark.servers
def test_probe_of_a_silent_device_prints_its_verdict_and_nothing_of_pymodbus() -> None:
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        result = probe_charger(port, "--timeout", "0.3")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "NO ANSWER (timeout)" in line
    assert "Is the unit id right (--unit)?" in line


@pytest.mark.servers
def test_probe_with_too_many_ports_hints_at_the_count() -> None:
    port = free_port()
    sim = start_sim("charger", "--port", str(port), "--ports", "10")
    try:
        result = probe_charger(port, "--count", "12")
        good = probe_charger(port)
    finally:
        stop_process(sim)
    assert result.returncode == 1
    assert "NO ANSWER (exception_2)" in result.stderr
    assert "(--count, default 10)" in result.stderr
    assert good.returncode == 0, good.stderr
    assert "port 10" in good.stdout


@pytest.mark.servers
def test_probe_json_holds_what_the_text_shows() -> None:
    port = free_port()
    sim = start_sim("charger", "--port", str(port), "--ports", "10", "--time-scale", "0")  # values frozen
    try:
        text = probe_charger(port)
        as_json = probe_charger(port, "--json")
        silent = probe_charger(free_port(), "--json", "--timeout", "0.3")
    finally:
        stop_process(sim)
    assert text.returncode == as_json.returncode == 0, as_json.stderr
    found = json.loads(as_json.stdout)
    assert (found["host"], found["port"], found["unit"], found["kind"]) == ("127.0.0.1", port, 1, "charger")
    assert found["answered"] is True
    assert text.stdout.startswith(f"127.0.0.1:{port} unit 1: {found['title']}, {found['reads']} reads in ")
    # Each channel's values, written as the text writes them, are the text's lines.
    lines = []
    for channel in found["channels"]:
        label = "device" if channel["channel"] is None else f"{found['group']} {channel['channel']}"
        shown = [
            f"{name}={v['value']:g}{v['unit']}" if isinstance(v["value"], float)
            else f"{name}={v['value']}{v['unit']}" + (f"({v['meaning']})" if v["meaning"] else "")
            for name, v in channel["values"].items()
        ]  # fmt: skip
        lines.append(f"  {label:<10} " + "  ".join(shown))
    assert lines == text.stdout.splitlines()[1:]
    assert len(found["channels"]) == 11  # the station and its 10 ports
    assert silent.returncode == 1
    assert json.loads(silent.stdout)["answered"] is False
    assert json.loads(silent.stdout)["reason"] in ("refused", "timeout")


@pytest.mark.servers
def test_the_simulator_refuses_a_fault_on_a_station_it_does_not_run() -> None:
    result = linli("sim", "charger", "--stations", "2", "--fault", "3:overheat")
    assert result.returncode == 2
    assert "--fault names station 3, but there are stations 1 to 2" in result.stderr


@pytest.mark.servers
def test_help_describes_every_option_with_its_default() -> None:
    check = linli("edge", "check", "--help").stdout
    assert "--contact" in check
    assert "Validate a config and print what the agent would do" in check
    probe = linli("edge", "probe", "--help").stdout
    assert "(default 502)" in probe
    demo = " ".join(linli("demo", "--help").stdout.split())
    assert "same seed, same day (default 1)" in demo
    assert "poll interval in seconds (default 1)" in demo
    assert "(default .linli-demo)" in demo


@pytest.mark.parametrize("value", ["0", "1001", "0.5", '"fast"'])
def test_an_mqtt_batch_outside_1_to_1000_ms_is_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, GOOD + f"\n[mqtt]\nbatch_ms = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [problem] = info.value.problems
    assert "mqtt.batch_ms" in problem
