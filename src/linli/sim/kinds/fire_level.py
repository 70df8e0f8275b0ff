"""Elevated fire tank level transmitter."""

from __future__ import annotations

from linli.sim.context import DeviceContext
from linli.sim.kinds.fire_models import LevelTransmitter

FAULTS = frozenset({"leak", "sensor_fault"})


def make(ctx: DeviceContext) -> LevelTransmitter:
    return LevelTransmitter(seed=ctx.seed, start=ctx.start, faults=ctx.faults)
