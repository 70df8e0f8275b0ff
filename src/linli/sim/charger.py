"""An e-bike charging station that behaves like one.

Bikes arrive through the day (a small morning peak, a large evening peak), charge at
constant current up to 80 % and then at constant voltage with a tapering current,
hold a float charge of about 10 W, and stop as full; the owner comes back later and
unplugs. Energy integrates power; port and cabinet temperatures follow load with a
ten-minute lag. A port stops at once when its stop coil is written, when it passes
the power limit (a power strip or an e-car battery), after the longest session, or
above 95 degC. Fuses blow now and then and are mended hours later. Faults by name:
`overheat` gives port 1 a loose contact that heats it past 90 degC while it charges (a
bike is on it from the start) and holds it at 93 degC, below the station's own cut-off,
until the port is stopped (or the bike is full): an episode that lasts until the edge acts, whenever its
poll comes, not one that could start and end between two polls. `smoke` sets off the
cabinet's smoke detector, `mains` reports a mains supply fault.

State advances in fixed one-second steps of simulated time from a seeded generator,
so a seed and a start time determine every value.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from linli.catalog.profile import Profile, RegisterType, get_profile
from linli.catalog.registers import Value

IDLE, CHARGING, FULL, FAULT, DISABLED = 0, 1, 2, 3, 4
NONE, R_FULL, TIME_UP, MANUAL, OVER_POWER, OVER_TEMP = 0, 1, 2, 3, 4, 5
SMOKE, UNPLUGGED, FUSE_BLOWN = 6, 7, 8

CV_START_SOC = 0.8
FLOAT_POWER_W = 10.0
FLOAT_THRESHOLD_W = 15.0  # below this the charger switches to float (JUY reference)
FLOAT_MINUTES = 45.0
CHARGER_EFFICIENCY = 0.88
THERMAL_TAU_S = 600.0
PORT_HEAT_K_PER_W = 0.05
CUTOFF_TEMP_C = 95.0
FUSE_FAILURES_PER_HOUR = 0.0002
POWER_STRIP_SHARE = 0.01
BAD_CONTACT_K = 80.0  # what a loose, arcing contact adds to port 1 under `overheat`, while it charges
LOOSE_CONTACT_C = 93.0  # where the loose contact's heat and the socket's losses balance
FAULTS = frozenset({"overheat", "smoke", "mains"})


def arrivals_per_hour(hour: float) -> float:
    """Expected bikes plugged in per station-hour at this local hour."""
    evening = 4.0 * math.exp(-(((hour - 20.0) / 2.0) ** 2))
    morning = 0.6 * math.exp(-(((hour - 8.0) / 1.2) ** 2))
    return 0.25 + evening + morning


def ambient_c(hour: float) -> float:
    """Outdoor temperature in a Shanghai shelter: coolest before dawn, warmest mid-afternoon."""
    return 16.0 + 6.0 * math.sin(2 * math.pi * (hour - 9.0) / 24.0)


@dataclass
class Port:
    """One socket and, when plugged in, its bike's battery."""

    state: int = IDLE
    stop_reason: int = NONE
    plugged: bool = False
    soc: float = 0.0
    capacity_kwh: float = 0.0
    cc_power_w: float = 0.0
    power_w: float = 0.0
    current_a: float = 0.0
    energy_kwh: float = 0.0
    elapsed_s: float = 0.0
    float_s: float = 0.0
    temp_c: float = 20.0
    leave_at: float = 0.0
    repair_at: float = 0.0


class ChargerStation:
    """One station: its ports, cabinet, settings and the command coils."""

    def __init__(
        self,
        *,
        seed: int | str,
        index: int,
        start: float,
        ports: int = 10,
        utc_offset_h: float = 8.0,
        profile: Profile | None = None,
        faults: frozenset[str] = frozenset(),
    ) -> None:
        self.profile = profile or get_profile("charger")
        self.count = ports
        self.t = float(int(start))
        self.utc_offset_h = utc_offset_h
        self.rng = random.Random(f"{seed}:{index}")
        hour = self._hour()
        self.ports = [Port(temp_c=ambient_c(hour)) for _ in range(ports)]
        self.cabinet_temp_c = ambient_c(hour)
        self.voltage_v = 228.0
        self.energy_total_kwh = 1000.0 + self.rng.uniform(0, 4000)
        self.max_port_power_w = 1400
        self.max_session_min = 360
        self.smoke = False
        self.door_open = False
        self.mains_fault = False
        self._stop_coils = self._command_addresses("stop")
        self.faults: frozenset[str] = frozenset()
        self.inject(faults)

    def inject(self, faults: frozenset[str]) -> None:
        """Start these faults now (a warmed-up station gets its trouble when it is served, or
        while it runs, from the district's control)."""
        new = faults - self.faults
        self.faults = faults
        self.smoke = "smoke" in faults
        self.mains_fault = "mains" in faults
        if "overheat" in new:
            self._arrive(self.ports[0])

    def _command_addresses(self, name: str) -> dict[int, int]:
        """Coil address -> port number for a per-port command."""
        mb = self.profile.modbus
        assert mb is not None
        assert mb.group is not None
        group = mb.group
        out = {}
        for command in group.commands:
            if command.name == name:
                for port in range(1, self.count + 1):
                    out[command.address + (port - 1) * group.stride] = port
        return out

    def _hour(self) -> float:
        return ((self.t / 3600.0) + self.utc_offset_h) % 24.0

    # --- commands -------------------------------------------------------------

    def stop_port(self, port: int) -> None:
        """The stop coil: end the session now; the owner unplugs later."""
        p = self.ports[port - 1]
        if p.state == CHARGING:
            self._end_session(p, MANUAL, IDLE)

    def write_coil(self, address: int, value: bool) -> bool:
        """Apply a coil write; False when no command lives at `address`."""
        port = self._stop_coils.get(address)
        if port is None:
            return False
        if value:
            self.stop_port(port)
        return True

    def write_register(self, address: int, value: int) -> bool:
        """Apply a holding-register write (the station's settings)."""
        if address == 0:
            self.max_port_power_w = value
        elif address == 1:
            self.max_session_min = value
        else:
            return False
        return True

    def set_disabled(self, port: int, disabled: bool) -> None:
        """Take a port out of service (or back)."""
        p = self.ports[port - 1]
        if disabled:
            self._end_session(p, NONE, DISABLED)
            p.plugged = False
        elif p.state == DISABLED:
            p.state = IDLE

    # --- simulation -----------------------------------------------------------

    def advance_to(self, t: float) -> bool:
        """Step one simulated second at a time up to `t`; True if anything moved."""
        moved = False
        while self.t + 1.0 <= t:
            self.t += 1.0
            self._step()
            moved = True
        return moved

    def _step(self) -> None:
        hour = self._hour()
        rng = self.rng
        if rng.random() < arrivals_per_hour(hour) / 3600.0:
            self._arrive()
        ambient = ambient_c(hour)
        total = 0.0
        bad_contact = self.ports[0] if "overheat" in self.faults else None
        for p in self.ports:
            self._step_port(p)
            arcing = p is bad_contact and p.power_w > 0  # contact heat needs current through it
            target = ambient + PORT_HEAT_K_PER_W * p.power_w + (BAD_CONTACT_K if arcing else 0.0)
            p.temp_c += (target - p.temp_c) / THERMAL_TAU_S
            if arcing:
                p.temp_c = min(p.temp_c, LOOSE_CONTACT_C)
            if p.state == CHARGING and p.temp_c > CUTOFF_TEMP_C:
                self._end_session(p, OVER_TEMP, IDLE)
            total += p.power_w
        cabinet_target = ambient + 0.004 * total + (30.0 if self.smoke else 0.0)
        self.cabinet_temp_c += (cabinet_target - self.cabinet_temp_c) / THERMAL_TAU_S
        self.voltage_v = 229.0 - 0.0015 * total + rng.gauss(0.0, 0.6)
        self.energy_total_kwh += total / 3_600_000.0

    def _arrive(self, port: Port | None = None) -> None:
        free = [p for p in self.ports if p.state == IDLE and not p.plugged]
        if not free:
            return
        rng = self.rng
        p = port or rng.choice(free)
        p.plugged = True
        p.soc = rng.uniform(0.1, 0.6)
        p.capacity_kwh = rng.uniform(0.55, 1.2)  # 48 V packs of 12-24 Ah
        strip = rng.random() < POWER_STRIP_SHARE
        p.cc_power_w = rng.uniform(1600, 2200) if strip else rng.uniform(120, 260)
        p.state = CHARGING
        p.stop_reason = NONE
        p.energy_kwh = 0.0
        p.elapsed_s = 0.0
        p.float_s = 0.0

    def _step_port(self, p: Port) -> None:
        if p.state == CHARGING:
            self._charge(p)
        elif p.state == FAULT:
            if self.t >= p.repair_at:
                p.state, p.stop_reason = IDLE, NONE
        elif p.plugged and self.t >= p.leave_at:
            p.plugged = False
            if p.state == FULL:
                p.state = IDLE
        if p.state in (IDLE, CHARGING, FULL) and self.rng.random() < FUSE_FAILURES_PER_HOUR / 3600:
            self._end_session(p, FUSE_BLOWN, FAULT)
            p.plugged = False
            p.repair_at = self.t + self.rng.uniform(4, 24) * 3600

    def _charge(self, p: Port) -> None:
        if p.soc < CV_START_SOC:
            power = p.cc_power_w
        else:
            taper = max(0.0, (1.0 - p.soc) / (1.0 - CV_START_SOC))
            power = p.cc_power_w * taper
            if power < FLOAT_THRESHOLD_W:
                power = FLOAT_POWER_W
                p.float_s += 1.0
        p.power_w = power * self.rng.uniform(0.98, 1.02)
        p.current_a = p.power_w / self.voltage_v
        p.energy_kwh += p.power_w / 3_600_000.0
        p.soc = min(1.0, p.soc + p.power_w * CHARGER_EFFICIENCY / 3_600_000.0 / p.capacity_kwh)
        p.elapsed_s += 1.0
        if p.power_w > self.max_port_power_w:
            self._end_session(p, OVER_POWER, IDLE)
        elif p.float_s >= FLOAT_MINUTES * 60:
            self._end_session(p, R_FULL, FULL)
        elif p.elapsed_s >= self.max_session_min * 60:
            self._end_session(p, TIME_UP, IDLE)

    def _end_session(self, p: Port, reason: int, state: int) -> None:
        p.state = state
        p.stop_reason = reason
        p.power_w = 0.0
        p.current_a = 0.0
        # The owner comes back after a while: sooner by day, in the morning after a night.
        p.leave_at = self.t + self.rng.expovariate(1 / 5400.0)

    # --- registers ------------------------------------------------------------

    def values(self) -> dict[tuple[int | None, str], Value]:
        """Every profile field's current value, keyed by (port or None, field)."""
        out: dict[tuple[int | None, str], Value] = {
            (None, "voltage"): self.voltage_v,
            (None, "cabinet_temp"): self.cabinet_temp_c,
            (None, "smoke_alarm"): int(self.smoke),
            (None, "door_open"): int(self.door_open),
            (None, "mains_fault"): int(self.mains_fault),
            (None, "total_power"): sum(p.power_w for p in self.ports),
            (None, "energy_total"): self.energy_total_kwh,
            (None, "max_port_power"): self.max_port_power_w,
            (None, "max_session"): self.max_session_min,
        }
        for n, p in enumerate(self.ports, start=1):
            out[(n, "state")] = p.state
            out[(n, "stop_reason")] = p.stop_reason
            out[(n, "current")] = p.current_a
            out[(n, "power")] = p.power_w
            out[(n, "energy")] = p.energy_kwh
            out[(n, "elapsed")] = p.elapsed_s
            out[(n, "temperature")] = p.temp_c
        return out

    def write(self, table: RegisterType, address: int, values: list[int]) -> bool:
        """A Modbus write from a client; False when the address holds no command."""
        if table is RegisterType.COIL:
            return all(self.write_coil(address + i, bool(v)) for i, v in enumerate(values))
        return all(self.write_register(address + i, v) for i, v in enumerate(values))
