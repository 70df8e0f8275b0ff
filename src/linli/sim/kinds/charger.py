"""E-bike charging station: option `ports` is 10 or 12; it starts a few hours into its day."""

from __future__ import annotations

from linli.sim.charger import FAULTS, ChargerStation
from linli.sim.context import DeviceContext

__all__ = ["FAULTS", "make"]


def make(ctx: DeviceContext) -> ChargerStation:
    warmup_s = float(ctx.options.get("warmup_s", 3 * 3600))
    station = ChargerStation(
        seed=ctx.seed,
        index=ctx.index,
        start=ctx.start - warmup_s,
        ports=int(ctx.options.get("ports", 10)),
    )
    station.advance_to(ctx.start)
    station.inject(ctx.faults)
    return station
