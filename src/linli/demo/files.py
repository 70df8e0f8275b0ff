"""The district demo's files: its scenario and timetable, and the configs it writes for itself.

The timetable is copied beside the configs with every contact (keepers, property offices)
pointed at the demo's inbox, and the notifier's subscription and the requesters' SMS gateway
too: all on loopback, which the configs consent to (`allow_private`) for these receivers only.
"""

from __future__ import annotations

import csv
import re
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from linli.demo.inbox import InboxServer, Person

SUBSCRIBER = "虹桥街道城运中心值班员"  # the operations centre's duty officer, the alert subscriber
EMAIL = re.compile(r'\{ kind = "email", to = \["([^"@]+)@[^"]+"\] \}')


def district_feed() -> tuple[Path, Path]:
    """The built-in scenario and its GTFS timetable, from the installed package."""
    from linli.catalog.scenario import builtin_scenario_path

    scenario = builtin_scenario_path()
    return scenario, scenario.parent / "gtfs" / "hongqiao"


def env_file(path: Path) -> dict[str, str]:
    """The variables of a `linli broker config` .env file."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip()
    return out


@dataclass
class DemoFiles:
    """Where the demo's configs are, and what they say."""

    folder: Path
    scenario: Path
    store_url: str
    mqtt_port: int
    notifier_port: int
    waste_port: int
    agent: str
    book_office: str = ""
    book_compound: str = ""
    modbus_ports: int = 0  # how many consecutive ports the Modbus devices take
    modbus_port: int = 0  # the first, once chosen

    @property
    def gtfs(self) -> Path:
        return self.folder / "gtfs"

    @property
    def edge(self) -> Path:
        return self.folder / "edge.toml"

    @property
    def notifier(self) -> Path:
        return self.folder / "notifier.toml"

    @property
    def waste(self) -> Path:
        return self.folder / "waste.toml"

    @property
    def broker(self) -> Path:
        return self.folder / "broker"

    def stop_names(self) -> dict[str, str]:
        """Each bin room's name, from the timetable's stops.txt."""
        with (self.gtfs / "stops.txt").open(encoding="utf-8-sig", newline="") as stops:
            return {row["stop_id"]: row["stop_name"] for row in csv.DictReader(stops)}

    def truck_names(self) -> dict[str, str]:
        """Each truck as people know it: its fleet number and plate."""
        extras = tomllib.loads((self.gtfs / "linli.toml").read_text(encoding="utf-8"))
        return {k: f"{v['fleet']}号 {v['plate']}" for k, v in extras.get("trucks", {}).items()}

    def write_edge_config(self, modbus_port: int) -> None:
        """The agent's config, every device of the scenario, Modbus from `modbus_port` on."""
        self.modbus_port = modbus_port
        from linli.catalog.scenario import load_scenario
        from linli.sim.edgeconfig import district_edge_config

        text = district_edge_config(
            load_scenario(self.scenario),
            writer={"kind": "influxdb2", "url": self.store_url, "org": "linli", "bucket": "linli"},
            modbus_port=modbus_port,
            mqtt_port=self.mqtt_port,
            agent=self.agent,
        )
        self.edge.write_text(text + '\n[buffer]\npath = "edge.buffer.sqlite"\n', encoding="utf-8")


def _point_contacts_at(inbox: InboxServer, extras: Path) -> None:
    """Every contact of the timetable's linli.toml delivers to the inbox, as itself."""
    text = extras.read_text(encoding="utf-8")
    text = text.replace("http://sms-gateway.district.example/send?to=", inbox.hook(""))
    text = EMAIL.sub(lambda m: f'{{ kind = "webhook", url = "{inbox.hook(m[1].replace(".", "-"))}" }}', text)
    extras.write_text(text, encoding="utf-8")
    for stop in tomllib.loads(text).get("stops", {}).values():
        for keeper in stop.get("keepers", []):
            _register(inbox, keeper, "keeper", "短信 SMS")
        if "property" in stop:
            _register(inbox, stop["property"], "property", "邮件 e-mail")


def _register(inbox: InboxServer, contact: dict[str, object], role: str, channel: str) -> None:
    for ch in contact.get("channels", []):  # type: ignore[attr-defined]
        url = str(ch.get("url", ""))
        if url.startswith(inbox.hook("")):
            inbox.inbox.register(
                url.removeprefix(inbox.hook("")), Person(str(contact["name"]), role, channel)
            )


def write_demo_configs(
    folder: Path,
    *,
    scenario_path: Path,
    feed: Path,
    inbox: InboxServer,
    store_url: str,
    mqtt_port: int,
    notifier_port: int,
    waste_port: int,
    agent: str,
) -> DemoFiles:
    """The timetable and the notifier's and waste service's configs, in `folder`."""
    from linli.catalog.scenario import expand, load_scenario

    folder.mkdir(parents=True, exist_ok=True)
    files = DemoFiles(folder, scenario_path, store_url, mqtt_port, notifier_port, waste_port, agent)
    shutil.copytree(feed, files.gtfs)
    _point_contacts_at(inbox, files.gtfs / "linli.toml")
    extras = tomllib.loads((files.gtfs / "linli.toml").read_text(encoding="utf-8"))
    # The booking link is a property office's, for its own compound: the first bin room's.
    compound, stop = next((k, v) for k, v in sorted(extras["stops"].items()) if "property" in v)
    files.book_office, files.book_compound = str(stop["property"]["name"]), compound
    files.modbus_ports = len({d.port for d in expand(load_scenario(scenario_path)) if d.port is not None})
    inbox.inbox.register("alerts", Person(SUBSCRIBER, "subscriber", "webhook"))
    inbox.inbox.register("sms", Person("预约人", "requester", "短信 SMS"))
    files.notifier.write_text(
        f"""# Written by `linli demo`: the notifier, its alerts to the demo's inbox.
state = "notifier.sqlite"
api_host = "127.0.0.1"
api_port = {notifier_port}
group_wait_s = 0.2

# The demo's own inbox, on loopback.
[delivery]
allow_private = true

[broker]
host = "127.0.0.1"
port = {mqtt_port}

[[subscriptions]]
id = "ops"
name = "{SUBSCRIBER}"
channels = [{{ kind = "webhook", url = "{inbox.hook("alerts")}" }}]
""",
        encoding="utf-8",
    )
    files.waste.write_text(
        f"""# Written by `linli demo`: the waste service on SQLite, every contact the demo's inbox.
gtfs = "gtfs"
state = "waste.sqlite"
api_host = "127.0.0.1"
api_port = {waste_port}

# The demo's own inbox, on loopback.
[delivery]
allow_private = true

[broker]
host = "127.0.0.1"
port = {mqtt_port}

[store]
url = "{store_url}"
database = "linli"

[bookings.sms]
url = "{inbox.hook("sms")}"
""",
        encoding="utf-8",
    )
    return files
