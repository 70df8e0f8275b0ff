"""`linli edge config new`: a first config from what the technician knows and what the scan found.

Devices come as `KIND@HOST[:PORT][/UNIT]` (Modbus) or `KIND=ID` (MQTT), or from the
`[[sites.devices]]` tables `linli edge scan` printed. What is not given is asked for on a
terminal, or left at the profile's defaults. The result is checked as `linli edge check`
checks it before it is written.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from linli.catalog.profile import get_profile

DEVICE = re.compile(
    r"^(?P<kind>[a-z_]+)(?:@(?P<host>[^:/=]+)(?::(?P<port>\d+))?(?:/(?P<unit>\d+))?)?(?:=(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]*))?$"
)


@dataclass
class Device:
    kind: str
    id: str
    host: str | None = None
    port: int | None = None
    unit: int | None = None


@dataclass
class NewConfig:
    site: str
    agent: str
    writer: dict[str, str] = field(default_factory=dict)
    mqtt_host: str | None = None
    devices: list[Device] = field(default_factory=list)
    mqtt_port: int | None = None  # None: the config's default, 1883

    def text(self) -> str:
        w = "".join(f'{k} = "{v}"\n' for k, v in self.writer.items())
        out = [
            f"# Written by `linli edge config new`; see docs/configuration.md for every key.\n"
            f'[agent]\nname = "{self.agent}"\nmetrics = "127.0.0.1:9464"\n',
            f"[writer]\n{w}",
        ]
        if any(get_profile(d.kind).mqtt is not None for d in self.devices):
            port = "" if self.mqtt_port is None else f"port = {self.mqtt_port}\n"
            out.append(f'[mqtt]\nhost = "{self.mqtt_host or "127.0.0.1"}"\n{port}')
        out.append(f'[[sites]]\nid = "{self.site}"\n')
        for d in self.devices:
            lines = [f'[[sites.devices]]\nid = "{d.id}"\nprofile = "{d.kind}"\n']
            if d.host is not None:
                lines.append(f'host = "{d.host}"\n')
            if d.port is not None:
                lines.append(f"port = {d.port}\n")
            if d.unit is not None:
                lines.append(f"unit = {d.unit}\n")
            out.append("".join(lines))
        return "\n".join(out)


def parse_device(text: str, taken: set[str]) -> Device:
    """`charger@192.168.1.20:502/1`, `fire_pressure@gw/3=sprinkler-1`, `camera=elevator-1`."""
    m = DEVICE.match(text.strip())
    if m is None:
        raise ValueError(f"device '{text}': write KIND@HOST[:PORT][/UNIT][=ID] or KIND=ID")
    kind = m["kind"]
    profile = get_profile(kind)  # KeyError names the kinds there are
    if profile.modbus is not None and not m["host"]:
        raise ValueError(f"device '{text}': a {kind} is read over Modbus: give @HOST")
    port = int(m["port"]) if m["port"] else None
    unit = int(m["unit"]) if m["unit"] else None
    name = m["id"] or _free(f"{kind}-{unit or 1}", taken)
    if name in taken:
        raise ValueError(f"device '{text}': the id '{name}' is taken; add =ID")
    taken.add(name)
    return Device(kind, name, m["host"], port, unit)


def from_scan(path: Path, taken: set[str]) -> list[Device]:
    """The `[[sites.devices]]` tables of a saved `linli edge scan` output."""
    text = path.read_text(encoding="utf-8")
    start = text.find("[[sites.devices]]")
    if start < 0:
        raise ValueError(
            f"{path}: no [[sites.devices]] tables: save the output of `linli edge scan --profile`"
        )
    tables = tomllib.loads("[[sites]]\n" + text[start:])["sites"][0]["devices"]
    out = []
    for t in tables:
        if t["profile"] == "PROFILE":
            raise ValueError(f"{path}: unit {t.get('unit')} has no profile: scan again with --profile")
        name = t["id"] if t["id"] not in taken else _free(t["id"], taken)
        taken.add(name)
        out.append(Device(t["profile"], name, t.get("host"), t.get("port"), t.get("unit")))
    return out


def ask_devices(ask: Callable[[str], str], taken: set[str]) -> list[Device]:
    """Device after device from the terminal, until an empty answer."""
    out = []
    while answer := ask("device (KIND@HOST[:PORT][/UNIT][=ID], empty to finish): ").strip():
        try:
            out.append(parse_device(answer, taken))
        except (ValueError, KeyError) as exc:
            print(f"  {exc.args[0]}")
    return out


def _free(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"
