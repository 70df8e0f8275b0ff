"""Start many simulated devices at once and keep them moving."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from linli.sim.charger import ChargerStation
from linli.sim.clock import SimClock
from linli.sim.modbus_server import DeviceServer, Fault, Served


@dataclass(frozen=True)
class ChargerFleetSpec:
    """K charging stations on consecutive TCP ports from `port`, unit id 1 each."""

    host: str = "127.0.0.1"
    port: int = 5020
    stations: int = 1
    ports: int = 10
    seed: int = 1
    faults: tuple[tuple[int, Fault], ...] = ()  # what the link does wrong
    station_faults: tuple[tuple[int, str], ...] = ()  # what the station does wrong (charger.FAULTS)
    slow_s: float = 2.0
    # Simulated seconds run before serving, so the first reads show a day in progress.
    warmup_s: float = 0.0


def make_station(spec: ChargerFleetSpec, index: int, at: float) -> ChargerStation:
    """Station `index` as it is at simulated time `at` (the same for the same spec)."""
    faults = frozenset(mode for n, mode in spec.station_faults if n == index)
    station = ChargerStation(seed=spec.seed, index=index, start=at - spec.warmup_s, ports=spec.ports)
    station.advance_to(at)
    station.inject(faults)
    return station


def charger_servers(spec: ChargerFleetSpec, clock: SimClock) -> list[DeviceServer]:
    """One server per station; station i (from 1) listens on port + i - 1.

    The stations start at `clock.start - spec.warmup_s` and are run up to `clock.start`.
    """
    faults = dict(spec.faults)
    servers = []
    for i in range(1, spec.stations + 1):
        station = make_station(spec, i, clock.start)
        served = Served(station, unit=1, fault=faults.get(i, Fault.NONE), slow_s=spec.slow_s)
        servers.append(DeviceServer(spec.host, spec.port + i - 1, [served], clock))
    return servers


async def run_servers(
    servers: list[DeviceServer],
    stop: asyncio.Event,
    tick_s: float = 1.0,
    started: asyncio.Event | None = None,
    on_tick: Callable[[], object] | None = None,
    *,
    clock: SimClock | None = None,
) -> None:
    """Serve until `stop`; advance every device each tick so no request pays for a long catch-up.

    `started` is set once every server listens, and `clock` (if given) begins then: whoever
    waits for `started` sees simulated time at its start. `on_tick` runs after each tick's advance.
    """
    for server in servers:
        await server.start()
    if clock is not None:
        clock.begin()
    if started is not None:
        started.set()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick_s)
            for server in servers:
                server.advance()
            if on_tick is not None:
                on_tick()
    finally:
        for server in servers:
            await server.stop()
