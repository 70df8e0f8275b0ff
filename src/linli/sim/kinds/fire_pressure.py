"""Pipe pressure transmitter: option `system` is `sprinkler` or `hydrant`."""

from __future__ import annotations

from linli.sim.context import DeviceContext
from linli.sim.kinds.fire_models import PressureTransmitter

FAULTS = frozenset({"leak", "sensor_fault"})


def make(ctx: DeviceContext) -> PressureTransmitter:
    return PressureTransmitter(
        seed=ctx.seed, start=ctx.start, faults=ctx.faults, system=str(ctx.options.get("system", "sprinkler"))
    )
