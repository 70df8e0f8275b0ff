"""Report by exception: a value is stored when it moves, and at least every so often.

SCADA historians keep slow signals cheap this way. A value is stored when it moves by more
than its deadband from the value last stored, or when it crosses one of the device's alarm
limits (so that the store and the edge's alerts agree about which side of a limit a value
is on), and at least every `store_every` seconds as a heartbeat, so that a dashboard's
`last()` over the past five minutes still finds it. Between two stored values the true
value stayed within the deadband of the first: `last()` with `fill(previous)` reads it back
to that precision.

The alert rules and interlocks see every poll; only what is stored is thinned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from linli.catalog.profile import Profile, Threshold
from linli.catalog.registers import Value


@dataclass(frozen=True)
class Deadband:
    """How one field is reported: `width` in the field's unit (0: any change), `every_ms` the heartbeat."""

    width: float
    every_ms: int
    limits: tuple[Threshold, ...] = ()

    def crossed(self, last: Value, value: Value) -> bool:
        """True when `last` and `value` lie on different sides of an alarm limit."""
        return any(t.breached(value) != t.breached(last) for t in self.limits)


class Reporter:
    """Thins the rows of one device to what must be stored; fields without a deadband pass."""

    def __init__(self, bands: Mapping[str, Deadband]) -> None:
        self.bands = dict(bands)
        # channel -> field -> the value last stored and when (ms).
        self._stored: dict[int | None, dict[str, tuple[Value, int]]] = {}
        self.suppressed = 0  # values not stored, for the agent's metrics

    def keep(self, channel: int | None, fields: Mapping[str, Value], time_ms: int) -> dict[str, Value]:
        """The fields of this reading to store; empty when nothing needs storing."""
        bands = self.bands
        if not bands:
            return dict(fields)
        stored = self._stored.get(channel)
        if stored is None:
            stored = self._stored[channel] = {}
        out: dict[str, Value] = {}
        suppressed = 0
        # This runs for every value of every poll: no method calls on the common path.
        for name, value in fields.items():
            band = bands.get(name)
            if band is not None:
                last = stored.get(name)
                # A clock set back must not hold a value back until it catches up again.
                if last is not None and 0 <= time_ms - last[1] < band.every_ms:
                    before = last[0]
                    # The same value is within any band (widths are >= 0) and crosses no limit:
                    # most values at most polls stop here.
                    if value == before:
                        suppressed += 1
                        continue
                    if band.width == 0 or type(value) is bool or type(before) is bool:
                        changed = True
                    else:
                        changed = abs(value - before) > band.width
                    if not changed and not (band.limits and band.crossed(before, value)):
                        suppressed += 1
                        continue
                stored[name] = (value, time_ms)
            out[name] = value
        self.suppressed += suppressed
        return out

    def forget(self) -> None:
        """Store everything at the next poll (after an outage, the first values must show)."""
        self._stored.clear()


def deadbands(
    profile: Profile,
    tags: Mapping[str, str],
    *,
    overrides: Mapping[str, float] | None = None,
    store_every: float | None = None,
) -> dict[str, Deadband]:
    """Each reported-by-exception field of a Modbus device of this kind, with these tags.

    `overrides` set or replace the profile's deadbands by field; `store_every` replaces every
    heartbeat. Sensor-fault fields are stored on change once any field is.
    """
    mb = profile.modbus
    if mb is None:
        return {}
    overrides = overrides or {}
    limits: dict[str, tuple[Threshold, ...]] = {}
    for threshold in profile.thresholds_for(dict(tags)):
        limits[threshold.field] = (*limits.get(threshold.field, ()), threshold)
    bands: dict[str, Deadband] = {}
    for point in mb.points + (mb.group.points if mb.group else []):
        width = overrides.get(point.field, point.deadband)
        if width is None or not point.store:
            continue
        every = store_every or point.store_every or mb.store_every
        bands[point.field] = Deadband(width, round(every * 1000), limits.get(point.field, ()))
    if bands:
        every_ms = round((store_every or mb.store_every) * 1000)
        for fault in mb.faults:
            bands[fault.field] = Deadband(0.0, every_ms, limits.get(fault.field, ()))
    return bands
