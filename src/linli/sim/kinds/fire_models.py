"""Fire facilities of a high-rise building, behind one RS485-to-TCP gateway.

Each sensor is its own unit id: pipe pressure transmitters (sprinkler and hydrant),
the elevated tank's level transmitter, the fire pump controller, and alarm points
(smoke detectors and fire doors). Values wander slightly around their set points;
faults are injected by name: `leak` drains a pipe slowly, `pump_fault` puts the pump
in fault, `sensor_fault` breaks a transmitter's 4-20 mA loop, `alarm` trips a point.
"""

from __future__ import annotations

import math
import random

from linli.catalog.profile import Profile, RegisterType, get_profile
from linli.catalog.registers import Value

# Pressure the jockey pump keeps in each system, MPa, and the transmitters' ranges.
NOMINAL_MPA = {"sprinkler": 0.45, "hydrant": 0.38}
PRESSURE_RANGE_MPA = 1.6
LEVEL_RANGE_M = 5.0
NOMINAL_LEVEL_M = 3.6
LEAK_MPA_PER_HOUR = 0.05
BROKEN_LOOP_MA = 2.1  # a cut wire reads below NAMUR's 3.6 mA


def loop_current(value: float, full_scale: float) -> float:
    """The 4-20 mA signal a healthy transmitter sends for `value`."""
    return round(4.0 + 16.0 * max(0.0, min(value, full_scale)) / full_scale, 2)


class _Sensor:
    """Common stepping: whole simulated seconds from a seeded generator."""

    kind = ""

    def __init__(self, *, seed: str, start: float, faults: frozenset[str]) -> None:
        self.profile: Profile = get_profile(self.kind)
        self.count = 1
        self.t = math.floor(start)
        self.start = start
        self.faults = faults
        self.rng = random.Random(seed)

    def advance_to(self, t: float) -> bool:
        changed = False
        while self.t + 1 <= t:
            self.t += 1
            changed = self.step() or changed
        return changed

    def step(self) -> bool:
        return False

    def write(self, _table: RegisterType, _address: int, _values: list[int]) -> bool:
        return False  # these sensors take no commands


class PressureTransmitter(_Sensor):
    """Pipe pressure in MPa, three decimals, with a small zero offset like a real unit."""

    kind = "fire_pressure"
    field = "pressure"
    decimals = 3

    def __init__(self, *, seed: str, start: float, faults: frozenset[str], system: str = "sprinkler") -> None:
        super().__init__(seed=seed, start=start, faults=faults)
        self.nominal = NOMINAL_MPA.get(system, 0.4)
        self.full_scale = PRESSURE_RANGE_MPA
        self.zero_offset = self.rng.randint(-3, 3)
        self.value = self.nominal

    def step(self) -> bool:
        target = self.nominal
        if "leak" in self.faults:
            target = max(0.0, self.nominal - LEAK_MPA_PER_HOUR * (self.t - self.start) / 3600)
        noise = self.rng.gauss(0, 0.002)
        new = round(max(0.0, target + noise), self.decimals)
        changed = new != self.value
        self.value = new
        return changed

    def values(self) -> dict[tuple[int | None, str], Value]:
        broken = "sensor_fault" in self.faults
        return {
            (None, "decimals"): self.decimals,
            (None, "zero_offset"): self.zero_offset,
            (None, self.field): self.value,
            (None, "loop_current"): BROKEN_LOOP_MA if broken else loop_current(self.value, self.full_scale),
        }


class LevelTransmitter(PressureTransmitter):
    """Elevated tank level in metres, two decimals; a leak lowers it too."""

    kind = "fire_level"
    field = "level"
    decimals = 2

    def __init__(self, *, seed: str, start: float, faults: frozenset[str], system: str = "tank") -> None:
        super().__init__(seed=seed, start=start, faults=faults, system=system)
        self.nominal = NOMINAL_LEVEL_M
        self.full_scale = LEVEL_RANGE_M
        self.value = self.nominal


class FirePump(_Sensor):
    """Stopped, with a weekly test run; `pump_fault` holds it in fault."""

    kind = "fire_pump"

    def __init__(self, *, seed: str, start: float, faults: frozenset[str]) -> None:
        super().__init__(seed=seed, start=start, faults=faults)
        self.starts = self.rng.randint(20, 200)
        self.state = self._state_now()

    def _state_now(self) -> int:
        if "pump_fault" in self.faults:
            return 2
        # A 10-minute test run at 10:00 every Monday (local time is UTC+8).
        local = self.t + 8 * 3600
        since_monday = (local - 4 * 86400) % (7 * 86400)  # epoch day 0 was a Thursday
        return 1 if 10 * 3600 <= since_monday < 10 * 3600 + 600 else 0

    def step(self) -> bool:
        new = self._state_now()
        if new == 1 and self.state != 1:
            self.starts += 1
        changed = new != self.state
        self.state = new
        return changed

    def values(self) -> dict[tuple[int | None, str], Value]:
        return {(None, "state"): self.state, (None, "auto_mode"): 1, (None, "starts"): self.starts}


class FirePoint(_Sensor):
    """A smoke detector (type 1) or fire door (type 2): normal unless `alarm` or `fault`."""

    kind = "fire_point"

    def __init__(self, *, seed: str, start: float, faults: frozenset[str], part_type: int = 1) -> None:
        super().__init__(seed=seed, start=start, faults=faults)
        self.part_type = part_type

    def values(self) -> dict[tuple[int | None, str], Value]:
        fault = "fault" in self.faults
        return {
            (None, "running"): 0 if fault else 1,
            (None, "alarm"): 1 if "alarm" in self.faults else 0,
            (None, "fault"): 1 if fault else 0,
            (None, "shielded"): 1 if "shielded" in self.faults else 0,
            (None, "part_type"): self.part_type,
        }
