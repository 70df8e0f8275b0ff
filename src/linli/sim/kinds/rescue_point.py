"""An emergency rescue point: a cabinet whose door, equipment and AED report their state.

It reports once a minute and at once when something changes. Residents open the door
now and then; inspectors come monthly. Faults: `open` leaves the door open and the
equipment missing, `aed_low` drains the AED battery to 10 %.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from typing import Any

from linli.catalog.profile import Profile, get_profile
from linli.sim.context import DeviceContext

REPORT_S = 60

Message = tuple[str, dict[str, Any]]


class RescuePoint:
    """One cabinet; `advance_to` returns the messages it published on the way."""

    def __init__(
        self, *, seed: str, start: float, faults: frozenset[str] = frozenset(), has_aed: bool = True
    ) -> None:
        self.profile: Profile = get_profile("rescue_point")
        self.rng = random.Random(seed)
        self.faults = faults
        self.t = math.floor(start)
        self.has_aed = has_aed
        self.aed_battery = 10 if "aed_low" in faults else self.rng.randint(60, 100)
        self.door_open = "open" in faults
        self.open_left = 0
        inspected = dt.datetime.fromtimestamp(start, dt.UTC) - dt.timedelta(days=self.rng.randint(1, 28))
        self.last_inspection = inspected.date().isoformat()
        self.next_report = self.t

    def advance_to(self, t: float) -> list[Message]:
        out: list[Message] = []
        while self.t + 1 <= t:
            self.t += 1
            changed = self._step()
            if changed or self.t >= self.next_report:
                self.next_report = self.t + REPORT_S
                out.append(("state", self._state()))
        return out

    def _step(self) -> bool:
        if "open" in self.faults:
            return False
        if self.open_left > 0:
            self.open_left -= 1
            if self.open_left == 0:
                self.door_open = False
                return True
            return False
        if self.rng.random() < 1 / 86400:  # about once a day
            self.door_open = True
            self.open_left = self.rng.randint(20, 120)
            return True
        return False

    def _state(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "ts": self.t * 1000,
            "door_open": self.door_open,
            "equipment_present": "open" not in self.faults,
            "last_inspection": self.last_inspection,
        }
        if self.has_aed:
            payload["aed_battery"] = self.aed_battery
        return payload


FAULTS = frozenset({"open", "aed_low"})


def make(ctx: DeviceContext) -> RescuePoint:
    """A rescue point; option `aed = false` for one without an AED."""
    return RescuePoint(
        seed=ctx.seed, start=ctx.start, faults=ctx.faults, has_aed=bool(ctx.options.get("aed", True))
    )
