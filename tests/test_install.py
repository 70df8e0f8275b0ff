"""`linli edge install`: the unit it writes passes `systemd-analyze verify` without a warning."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from linli.edge.install import Unit, problems
from support import linli

CONFIG = """
[writer]
kind = "influxdb1"
url = "http://127.0.0.1:8086"
database = "linli"

[[sites]]
id = "s"

[[sites.devices]]
id = "station-1"
profile = "charger"
"""


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.fail("systemd-analyze is not installed: apt-get install -y systemd", pytrace=False)
    return subprocess.run(
        [binary, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_unit_is_sandboxed_and_systemd_takes_it_without_a_word(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(CONFIG)
    shown = linli(
        "edge", "install", "--config", str(config), "--env-file", "/etc/linli/edge.env", "--dry-run"
    )
    assert shown.returncode == 0, shown.stderr
    unit = tmp_path / "linli-edge.service"
    unit.write_text(shown.stdout)
    checked = verify(unit)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""  # systemd warns about values it ignores, still exiting 0
    text = shown.stdout
    assert f"edge run --config {config}" in text
    for line in (
        "User=linli",
        "StateDirectory=linli",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "EnvironmentFile=-/etc/linli/edge.env",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in text.splitlines(), line
    # The same check catches a value systemd would ignore.
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSystem=stricter"))
    assert "protect system value" in verify(broken).stderr


def test_what_would_keep_the_service_from_starting_is_said_first(tmp_path: Path) -> None:
    assert problems(Unit("x", Path("/home/tech/edge.toml"), Path(shutil.which("sh") or "/bin/sh"))) == [
        "the config /home/tech/edge.toml is under a home directory, which the service cannot read "
        "(ProtectHome): put it under /etc/linli"
    ]
    bad = tmp_path / "bad.toml"
    bad.write_text("[writer]\n")
    refused = linli("edge", "install", "--config", str(bad), "--dry-run")
    assert refused.returncode == 2
    assert "config error" in refused.stderr
