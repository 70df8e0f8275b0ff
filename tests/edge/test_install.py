"""`linli edge install`: the unit it writes passes `systemd-analyze verify` without a warning."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from linli.edge.install import Unit, problems
from support import linli

pytestmark = pytest.mark.servers  # every test here starts a server or a process

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
    sh = Path(shutil.which("sh") or "/bin/sh")
    assert problems(Unit("x", Path("/home/tech/edge.toml"), sh)) == [
        "the config /home/tech/edge.toml is under a home directory, which the service cannot read "
        "(ProtectHome): put it under /etc/linli"
    ]
    # PrivateTmp gives the service a /tmp of its own: a config, a command or secrets there vanish.
    assert problems(
        Unit("x", Path("/tmp/edge.toml"), Path("/var/tmp/venv/bin/linli"), env_file=Path("/tmp/e.env"))
    ) == [
        "the config /tmp/edge.toml is under a temporary folder, which the service does not see "
        "(PrivateTmp): put it under /etc/linli",
        "the linli command /var/tmp/venv/bin/linli is under a temporary folder, which the service does "
        "not see (PrivateTmp): install linli outside it, e.g. in /opt/linli",
        "the environment file /tmp/e.env is under a temporary folder, which the service does not see "
        "(PrivateTmp): put it under /etc/linli",
        "no linli command at /var/tmp/venv/bin/linli",
    ]
    assert problems(Unit("x", Path("/etc/linli/edge.toml"), sh, env_file=Path("/etc/linli/edge.env"))) == []
    bad = tmp_path / "bad.toml"
    bad.write_text("[writer]\n")
    refused = linli("edge", "install", "--config", str(bad), "--dry-run")
    assert refused.returncode == 2
    assert "config error" in refused.stderr


def test_a_dry_run_shows_the_unit_and_says_what_the_install_would_refuse(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"  # pytest's folders are under /tmp
    config.write_text(CONFIG)
    assert str(config.resolve()).startswith("/tmp/"), "this test needs its temporary folder under /tmp"
    shown = linli("edge", "install", "--config", str(config), "--dry-run")
    assert shown.returncode == 0, shown.stderr
    assert "PrivateTmp=yes" in shown.stdout.splitlines()
    assert (
        f"linli edge install: warning: the config {config.resolve()} is under a temporary folder, "
        "which the service does not see (PrivateTmp): put it under /etc/linli; the install would refuse this"
    ) in shown.stderr.splitlines()
