"""The district scenario: sites, device groups and the trucks' timetable, from one TOML file.

The scenario is data. Expanding it gives every device its identity, its simulator's
options and, for Modbus devices, the TCP port and unit id it answers on, in a fixed
order, so that the simulator and the generated edge config always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, model_validator

from linli.catalog.errors import load_toml_model
from linli.catalog.profile import Profile, get_profile
from linli.catalog.strict import Strict

Ident = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=48)]


class SiteSpec(Strict):
    """A residential compound, a building, or the truck fleet."""

    id: Ident
    name: str = ""  # as people in the district say it (zh-CN)
    name_en: str = ""  # for whoever reads English; empty: `name`
    lat: float | None = None
    lon: float | None = None


class GroupSpec(Strict):
    """`per_site` devices of one kind at each of `sites`."""

    kind: str
    sites: list[Ident]
    per_site: Annotated[int, Field(ge=1, le=100)] = 1
    # Device id template; {n} is the device's number within its site.
    id: str = "{kind}-{n}"
    # How often the edge polls it (Modbus) or expects its heartbeat (MQTT); default: the profile's.
    interval: Annotated[float, Field(gt=0, le=3600)] | None = None
    # Modbus devices with the same gateway name at a site share one TCP port, one unit id each.
    gateway: Ident | None = None
    tags: dict[str, str] = {}
    options: dict[str, Any] = {}


class Scenario(Strict):
    """The whole file."""

    name: Ident
    title: str = ""
    seed: int = 1
    sites: list[SiteSpec]
    groups: list[GroupSpec]
    # The GTFS timetable the trucks run (`linli waste check` validates it), relative to the
    # current directory; `linli sim district --gtfs DIR` overrides it.
    timetable: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = []
        site_ids = [s.id for s in self.sites]
        if len(set(site_ids)) != len(site_ids):
            problems.append("site ids must be unique")
        for i, group in enumerate(self.groups):
            try:
                get_profile(group.kind)
            except KeyError as exc:
                problems.append(f"groups[{i}].kind: {exc.args[0]}")
            for site in group.sites:
                if site not in site_ids:
                    problems.append(f"groups[{i}].sites: '{site}' is not a site of the scenario")
            if "{n}" not in group.id and group.per_site > 1:
                problems.append(f"groups[{i}].id: needs {{n}} when per_site > 1")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass(frozen=True)
class PlacedDevice:
    """One device of the expanded scenario."""

    site: str
    device: str
    kind: str
    index: int
    group: GroupSpec
    port: int | None = None  # Modbus: TCP port offset from the base port
    unit: int | None = None

    @property
    def profile(self) -> Profile:
        return get_profile(self.kind)


def expand(scenario: Scenario) -> list[PlacedDevice]:
    """Every device, in site order; Modbus devices get consecutive port offsets."""
    out: list[PlacedDevice] = []
    port = 0
    for site in scenario.sites:
        gateways: dict[str, tuple[int, int]] = {}  # name -> (port offset, units used)
        seen: set[str] = set()
        for group in scenario.groups:
            if site.id not in group.sites:
                continue
            modbus = get_profile(group.kind).modbus is not None
            for n in range(1, group.per_site + 1):
                device = group.id.format(kind=group.kind.replace("_", "-"), n=n)
                if device in seen:
                    raise ValueError(f"site '{site.id}': device id '{device}' is used twice")
                seen.add(device)
                placed_port = unit = None
                if modbus and group.gateway:
                    offset, used = gateways.get(group.gateway, (port, 0))
                    if group.gateway not in gateways:
                        port += 1
                    gateways[group.gateway] = (offset, used + 1)
                    placed_port, unit = offset, used + 1
                elif modbus:
                    placed_port, unit = port, 1
                    port += 1
                out.append(PlacedDevice(site.id, device, group.kind, n, group, placed_port, unit))
    return out


def builtin_scenario_path(name: str = "hongqiao") -> Path:
    return Path(str(resources.files("linli.catalog.scenarios"))) / f"{name}.toml"


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario; ConfigError names each bad key."""
    return load_toml_model(path, Scenario)
