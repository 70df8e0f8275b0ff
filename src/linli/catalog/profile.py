"""Device profiles: one declarative TOML file per device kind, validated strictly.

A profile says what a device offers: its data points with units and scaling, and for
Modbus devices where each point lives in the register map. Everything else (the
simulator, the edge poller, the register-map docs) is built from it.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, model_validator

from linli.catalog.errors import ConfigError, load_toml_model
from linli.catalog.mqttspec import MqttSpec, Name
from linli.catalog.strict import Strict

# Tags every reading carries; a field may not reuse them (InfluxDB 3 rejects a name
# that is both tag and field).
RESERVED_TAGS = frozenset({"site", "device", "kind"})


class RegisterType(StrEnum):
    """The four Modbus data tables."""

    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"

    @property
    def is_bit(self) -> bool:
        return self in (RegisterType.COIL, RegisterType.DISCRETE)


class DataType(StrEnum):
    """How the bits of one or two registers make a number."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    BOOL = "bool"  # a coil or discrete input

    @property
    def registers(self) -> int:
        return 2 if self in (DataType.INT32, DataType.UINT32, DataType.FLOAT32) else 1

    @property
    def bits(self) -> int:
        return 16 * self.registers if self is not DataType.BOOL else 1


class Order(StrEnum):
    """Byte order inside a register, or word order across registers."""

    BIG = "big"
    LITTLE = "little"


class ModbusPoint(Strict):
    """One value read from the register map; it becomes the field `field`."""

    field: Name
    # "register" in the file; BaseModel already has an attribute of that name.
    table: RegisterType = Field(alias="register")
    address: Annotated[int, Field(ge=0, le=65535)]
    type: DataType = DataType.UINT16
    bit: Annotated[int, Field(ge=0, le=31)] | None = None
    byte_order: Order | None = None
    word_order: Order | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    enum: dict[str, str] | None = None
    valid_min: float | None = None
    valid_max: float | None = None
    # value = (raw + offset) / 10**decimals, with both read from other points of the device,
    # the way RS485 transmitters report (a decimals register beside the raw value).
    decimals_from: Name | None = None
    offset_from: Name | None = None
    # False for registers that only qualify another value (decimals, zero offset).
    store: bool = True
    # A configuration register (a limit, a setpoint): read every SETTINGS_S, not every poll.
    setting: bool = False
    # Report by exception: stored only when it moves by more than `deadband` (in `unit`; 0 is
    # any change) from the value last stored, or crosses a threshold, and at least every
    # `store_every` seconds (the map's when unset). Unset: stored at every poll.
    deadband: Annotated[float, Field(ge=0)] | None = None
    store_every: Annotated[float, Field(gt=0, le=3600)] | None = None

    @property
    def valid_range(self) -> str:
        """`lo..hi` as people read it; empty when the point has no range."""
        if self.valid_min is None and self.valid_max is None:
            return ""
        lo = "" if self.valid_min is None else f"{self.valid_min:g}"
        hi = "" if self.valid_max is None else f"{self.valid_max:g}"
        return f"{lo}..{hi}"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.table.is_bit != (self.type is DataType.BOOL):
            raise ValueError(
                f"point '{self.field}': type 'bool' goes with register 'coil' or 'discrete', "
                f"and only there (got type '{self.type}' on register '{self.table}')"
            )
        if self.bit is not None:
            if self.type in (DataType.FLOAT32, DataType.BOOL):
                raise ValueError(f"point '{self.field}': 'bit' needs an integer type")
            if self.bit >= self.type.bits:
                raise ValueError(
                    f"point '{self.field}': bit {self.bit} is outside a {self.type.bits}-bit value"
                )
        if self.scale == 0:
            raise ValueError(f"point '{self.field}': scale must not be 0")
        if self.enum is not None:
            for key in self.enum:
                if not key.lstrip("-").isdigit():
                    raise ValueError(f"point '{self.field}': enum key '{key}' is not an integer")
        return self

    @property
    def is_integer(self) -> bool:
        """True when the stored field is an integer (no scaling applied)."""
        return self.type is not DataType.FLOAT32 and self.scale == 1.0 and self.offset == 0.0

    def at(self, shift: int) -> ModbusPoint:
        """The same point moved `shift` addresses on (for repeated groups)."""
        return self.model_copy(update={"address": self.address + shift})


class ModbusCommand(Strict):
    """A coil or holding register that a person or a rule writes to act on the device."""

    name: Name
    table: RegisterType = Field(alias="register")
    address: Annotated[int, Field(ge=0, le=65535)]
    description: str = ""

    @model_validator(mode="after")
    def _writable(self) -> Self:
        if self.table not in (RegisterType.COIL, RegisterType.HOLDING):
            raise ValueError(f"command '{self.name}': only coils and holding registers are writable")
        return self


class ModbusGroup(Strict):
    """Points repeated once per channel (a charger's ports), `stride` addresses apart.

    Addresses in `points` and `commands` are those of channel 1.
    """

    tag: Name
    count: Annotated[int, Field(ge=1, le=256)]
    max_count: Annotated[int, Field(ge=1, le=256)]
    stride: Annotated[int, Field(ge=1)]
    points: list[ModbusPoint]
    commands: list[ModbusCommand] = []

    @model_validator(mode="after")
    def _counts(self) -> Self:
        if self.count > self.max_count:
            raise ValueError(f"group count {self.count} exceeds max_count {self.max_count}")
        return self


class RangeFault(Strict):
    """A qualifying point outside its live range means the sensor, not the process, is at fault.

    A 4-20 mA loop below 3.6 mA or above 21 mA is a broken wire or a failed transmitter
    (NAMUR NE43): `field` is set true and the points in `drops` are not stored.
    """

    point: Name
    min: float
    max: float
    field: Name = "sensor_fault"
    drops: list[Name]


class ModbusMap(Strict):
    """The register map and the defaults of how to read it."""

    unit: Annotated[int, Field(ge=0, le=255)] = 1
    byte_order: Order = Order.BIG
    word_order: Order = Order.BIG
    # Modbus allows 125 registers (2000 bits) a read; some gateways want fewer.
    max_registers_per_read: Annotated[int, Field(ge=1, le=125)] = 125
    max_gap: Annotated[int, Field(ge=0, le=124)] = 16
    # The heartbeat of points reported by exception. The dashboards' "now" panels look back
    # five minutes, so a value unchanged for longer must still be stored within that.
    store_every: Annotated[float, Field(gt=0, le=3600)] = 120.0
    points: list[ModbusPoint] = []
    commands: list[ModbusCommand] = []
    group: ModbusGroup | None = None
    faults: list[RangeFault] = []


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class Threshold(Strict):
    """A default alarm limit on one stored field; alert rules and the dashboards both use it."""

    field: Name
    above: float | None = None
    below: float | None = None
    severity: Severity = Severity.WARNING
    # Clears only this far back on the safe side, so a value hovering at the limit
    # does not fire and resolve at every poll.
    hysteresis: Annotated[float, Field(ge=0)] = 0.0
    # Fires only after the limit has been passed this long (seconds); pending until then.
    for_s: Annotated[float, Field(ge=0, le=86400)] = 0.0
    # Applies only to devices whose tags have these values (a sprinkler is not a hydrant).
    when: dict[Name, str] = {}
    title: str
    source: str = ""

    @model_validator(mode="after")
    def _one_side(self) -> Self:
        if (self.above is None) == (self.below is None):
            raise ValueError(f"threshold on '{self.field}': give exactly one of above and below")
        return self

    @property
    def value(self) -> float:
        """The limit itself, whichever side it is on."""
        limit = self.above if self.above is not None else self.below
        assert limit is not None  # the validator made sure
        return limit

    def breached(self, value: float) -> bool:
        """True when `value` is past the limit."""
        return value > self.above if self.above is not None else value < self.value


class Profile(Strict):
    """A device kind: what it measures and how to read it."""

    kind: Name
    title: str
    description: str = ""
    measurement: Name
    modbus: ModbusMap | None = None
    mqtt: MqttSpec | None = None
    thresholds: list[Threshold] = []

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = _profile_problems(self)
        stored = self.stored_fields()
        problems.extend(
            f"threshold on '{t.field}': the profile stores no such field"
            for t in self.thresholds
            if t.field not in stored
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def group_tag(self) -> str | None:
        return self.modbus.group.tag if self.modbus and self.modbus.group else None

    def stored_fields(self) -> set[str]:
        """Every field name this kind writes to its measurement."""
        if self.mqtt is not None:
            return {name for m in self.mqtt.messages for name in m.stored_fields()}
        if self.modbus is None:
            return set()
        mb = self.modbus
        points = mb.points + (mb.group.points if mb.group else [])
        return {p.field for p in points if p.store} | {f.field for f in mb.faults}

    def thresholds_for(self, tags: dict[str, str]) -> list[Threshold]:
        """The thresholds that apply to a device with these tags."""
        return [t for t in self.thresholds if all(tags.get(k) == v for k, v in t.when.items())]

    def modbus_points(self, count: int | None = None) -> list[tuple[int | None, ModbusPoint]]:
        """Every point to poll, with its channel number (None for device-level points)."""
        if self.modbus is None:
            return []
        out: list[tuple[int | None, ModbusPoint]] = [(None, p) for p in self.modbus.points]
        group = self.modbus.group
        if group is not None:
            n = group.count if count is None else count
            for channel in range(1, n + 1):
                shift = (channel - 1) * group.stride
                out.extend((channel, p.at(shift)) for p in group.points)
        return out


def _profile_problems(profile: Profile) -> list[str]:  # noqa: PLR0912 (one check a branch)
    problems: list[str] = []
    if (profile.modbus is None) == (profile.mqtt is None):
        problems.append("a profile needs exactly one of [modbus] and [mqtt]")
    if profile.mqtt is not None:
        for message in profile.mqtt.messages:
            for f in message.fields:
                if f.name in RESERVED_TAGS:
                    problems.append(f"message '{message.name}': '{f.name}' is a reserved tag name")
    if profile.modbus is None:
        return problems
    mb = profile.modbus
    group = mb.group
    device_fields = [p.field for p in mb.points]
    group_fields = [p.field for p in group.points] if group else []
    for name in set(device_fields + group_fields):
        if (device_fields + group_fields).count(name) > 1:
            problems.append(f"field '{name}' is defined more than once")
        if name in RESERVED_TAGS or (group and name == group.tag):
            problems.append(f"field '{name}' has the name of a tag; rename it")
    if group and group.tag in RESERVED_TAGS:
        problems.append(f"group tag '{group.tag}' is reserved")
    problems.extend(_derivation_problems(mb))
    # Two points must not share a register unless they are bits of the same word.
    used: dict[tuple[RegisterType, int], str] = {}
    points = [p for _, p in profile.modbus_points(group.max_count if group else None)]
    for point in points:
        for addr in range(point.address, point.address + point.type.registers):
            key = (point.table, addr)
            if key in used and (point.bit is None or used[key] != "bit"):
                problems.append(f"point '{point.field}' overlaps another point at {point.table} {addr}")
            used[key] = "bit" if point.bit is not None else point.field
    return problems


def _derivation_problems(mb: ModbusMap) -> list[str]:
    problems = []
    fields = {p.field for p in mb.points}
    for point in mb.points:
        for ref in (point.decimals_from, point.offset_from):
            if ref is not None and ref not in fields:
                problems.append(f"point '{point.field}' refers to '{ref}', which is no device-level point")
    for fault in mb.faults:
        for name in (fault.point, *fault.drops):
            if name not in fields:
                problems.append(f"fault check names '{name}', which is no device-level point")
        if fault.field in fields:
            problems.append(f"fault field '{fault.field}' is computed; do not declare it as a point")
    if mb.group is not None and any(p.decimals_from or p.offset_from for p in mb.group.points):
        problems.append("decimals_from and offset_from work on device-level points only")
    return problems


def load_profile(path: Path) -> Profile:
    """Read and validate one profile file; raise ConfigError naming each bad key."""
    profile = load_toml_model(path, Profile)
    if profile.kind != path.stem:
        raise ConfigError(path, [f"key 'kind': '{profile.kind}' must match the file name '{path.stem}'"])
    return profile


def builtin_profile_dir() -> Path:
    """Where the profiles shipped with linli live."""
    return Path(str(resources.files("linli.catalog.profiles")))


@cache
def builtin_profiles() -> dict[str, Profile]:
    """All shipped profiles by kind."""
    return {p.stem: load_profile(p) for p in sorted(builtin_profile_dir().glob("*.toml"))}


def get_profile(kind: str) -> Profile:
    """One shipped profile; the error lists the kinds there are."""
    profiles = builtin_profiles()
    if kind not in profiles:
        raise KeyError(f"no profile '{kind}'; known kinds: {', '.join(sorted(profiles))}")
    return profiles[kind]
