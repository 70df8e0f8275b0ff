"""Fire pump controller."""

from __future__ import annotations

from linli.sim.context import DeviceContext
from linli.sim.kinds.fire_models import FirePump

FAULTS = frozenset({"pump_fault"})


def make(ctx: DeviceContext) -> FirePump:
    return FirePump(seed=ctx.seed, start=ctx.start, faults=ctx.faults)
