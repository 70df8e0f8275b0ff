"""Smoke detector or fire door: option `part_type` is 1 (detector) or 2 (door)."""

from __future__ import annotations

from linli.sim.context import DeviceContext
from linli.sim.kinds.fire_models import FirePoint

FAULTS = frozenset({"alarm", "fault", "shielded"})


def make(ctx: DeviceContext) -> FirePoint:
    return FirePoint(
        seed=ctx.seed, start=ctx.start, faults=ctx.faults, part_type=int(ctx.options.get("part_type", 1))
    )
