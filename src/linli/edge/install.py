"""`linli edge install`: the agent as a systemd service that survives reboots.

A dedicated system user, state in /var/lib/linli (systemd's StateDirectory), restart on
failure, and the sandboxing systemd offers: the agent needs the network, its state directory
and its config, nothing else.
"""

from __future__ import annotations

import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

USER = "linli"
STATE = "/var/lib/linli"
UNIT_DIR = Path("/etc/systemd/system")


@dataclass(frozen=True)
class Unit:
    name: str  # the unit's name without .service
    config: Path  # absolute
    executable: Path  # the linli command
    user: str = USER
    env_file: Path | None = None  # secrets: broker and store credentials, mode 0600

    def text(self) -> str:
        env = f"EnvironmentFile=-{self.env_file}\n" if self.env_file else ""
        return f"""\
# Written by `linli edge install`; run it again rather than editing this file.
[Unit]
Description=linli edge agent ({self.config})
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User={self.user}
Group={self.user}
ExecStart={self.executable} edge run --config {self.config}
# systemctl reload: the config read again; devices and rules change, the buffer stays.
ExecReload=/bin/kill -HUP $MAINPID
Environment=LINLI_STATE_DIR={STATE}
{env}StateDirectory=linli
StateDirectoryMode=0750
# SIGTERM flushes what it can and keeps the rest in the durable buffer for the next start.
TimeoutStopSec=30
Restart=on-failure
RestartSec=5

# The agent needs the network, its state directory and its config: nothing else.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
CapabilityBoundingSet=
UMask=0027

[Install]
WantedBy=multi-user.target
"""


def problems(unit: Unit) -> list[str]:
    """What would keep the service from starting, said before anything is written."""
    out = []
    if not unit.config.is_absolute():
        out.append(f"the config {unit.config} must be an absolute path")
    named = [("the config", unit.config, "put it under /etc/linli")]
    named.append(("the linli command", unit.executable, "install linli outside it, e.g. in /opt/linli"))
    if unit.env_file is not None:
        named.append(("the environment file", unit.env_file, "put it under /etc/linli"))
    for what, path, fix in named:
        hidden = _hidden(path)
        if hidden:
            out.append(f"{what} {path} is under {hidden}: {fix}")
    if not unit.executable.is_file():
        out.append(f"no linli command at {unit.executable}")
    return out


def _hidden(path: Path) -> str | None:
    """Where the sandbox hides `path` from the service; None if the service can see it."""
    text = str(path)
    if text.startswith(("/home/", "/root/")):
        return "a home directory, which the service cannot read (ProtectHome)"
    if text.startswith(("/tmp/", "/var/tmp/")):  # noqa: S108 (names them, never writes there)
        # PrivateTmp gives the service an empty /tmp of its own: the file would not be there.
        return "a temporary folder, which the service does not see (PrivateTmp)"
    return None


def install(unit: Unit, unit_dir: Path = UNIT_DIR, *, start: bool = True) -> list[str]:
    """Create the user, write the unit, enable (and start) it; the steps taken, for the log."""
    done = []
    try:
        pwd.getpwnam(unit.user)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--home-dir", STATE, "--no-create-home", "--shell", "/usr/sbin/nologin",
             unit.user],
            check=True,
        )  # fmt: skip
        done.append(f"made the system user {unit.user}")
    path = unit_dir / f"{unit.name}.service"
    path.write_text(unit.text(), encoding="utf-8")
    path.chmod(0o644)
    done.append(f"wrote {path}")
    systemctl = shutil.which("systemctl") or "systemctl"
    subprocess.run([systemctl, "daemon-reload"], check=True)
    subprocess.run([systemctl, "enable", *(["--now"] if start else []), f"{unit.name}.service"], check=True)
    done.append(f"enabled {unit.name}" + (" and started it" if start else ""))
    return done
