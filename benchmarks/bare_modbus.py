"""The ceiling for `charger_poll.py`: a bare pymodbus client that polls what the agent polls.

It reads the agent's config, plans each device's reads with the agent's own planner (the
same registers in the same requests), and asks them on the same schedule (every device at its
interval, spread over it as the agent spreads them, the settings every minute), over one
connection per endpoint. It decodes nothing, stores nothing, keeps no health: what is left is
pymodbus and asyncio, the least any Python poller of these devices pays.

    .venv/bin/python benchmarks/bare_modbus.py --config edge.toml [--duration 60]

It prints the answered polls a second when it stops (at --duration or on SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from linli.catalog.profile import RegisterType, get_profile
from linli.edge.config import load_config
from linli.edge.modbus import SETTINGS_S, DevicePoller, first_poll
from linli.edge.modbusendpoint import Endpoint
from linli.edge.readplan import Read


class Bare:
    """One device's planned reads, asked on the agent's schedule, the answers thrown away."""

    def __init__(self, client: AsyncModbusTcpClient, lock: asyncio.Lock, plan: DevicePoller) -> None:
        self.client = client
        self.lock = lock
        self.unit = plan.unit
        self.interval = plan.device.interval
        self.live = plan.live_reads
        self.every = plan.reads
        self.polls = 0
        self.failed = 0

    async def _read(self, read: Read) -> bool:
        call = {
            RegisterType.HOLDING: self.client.read_holding_registers,
            RegisterType.INPUT: self.client.read_input_registers,
            RegisterType.COIL: self.client.read_coils,
            RegisterType.DISCRETE: self.client.read_discrete_inputs,
        }[read.table]
        resp = await call(read.address, count=read.count, device_id=self.unit)
        return not resp.isError()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        scheduled = first_poll(loop.time(), self.interval)
        settings_due = 0.0
        while not stop.is_set():
            delay = scheduled - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            now = loop.time()
            reads = self.every if now >= settings_due else self.live
            try:
                async with self.lock:
                    ok = all([await self._read(read) for read in reads])
            except Exception:  # a ceiling, not a poller: count the failure and go on
                ok = False
            if reads is self.every:
                settings_due = now + SETTINGS_S
            self.polls += ok
            self.failed += not ok
            scheduled += self.interval
            if scheduled < loop.time():
                scheduled += ((loop.time() - scheduled) // self.interval + 1) * self.interval


async def main_async(config_path: Path, duration: float) -> int:
    config = load_config(config_path)
    clients: dict[tuple[str, int], tuple[AsyncModbusTcpClient, asyncio.Lock]] = {}
    bares: list[Bare] = []
    for site, device in config.devices():
        profile = get_profile(device.profile)
        if profile.modbus is None:
            continue
        key = (device.host, device.port)
        if key not in clients:
            client = AsyncModbusTcpClient(device.host, port=device.port, timeout=device.timeout, retries=0)
            if not await client.connect():
                print(f"bare_modbus: cannot connect to {device.host}:{device.port}", file=sys.stderr)
                return 1
            clients[key] = (client, asyncio.Lock())
        # The agent's planner, through its poller: the same requests, nothing else of it is used.
        plan = DevicePoller(
            site=site.id,
            device=device,
            profile=profile,
            endpoint=Endpoint(device.host, device.port, device.timeout),
            emit=lambda _: None,
        )
        bares.append(Bare(*clients[key], plan))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.call_later(duration, stop.set)
    started = time.monotonic()
    await asyncio.gather(*(b.run(stop) for b in bares))
    seconds = time.monotonic() - started
    for client, _ in clients.values():
        client.close()
    polls = sum(b.polls for b in bares)
    failed = sum(b.failed for b in bares)
    print(f"bare_modbus: {polls / seconds:.1f} polls/s answered, {failed} failed, {len(bares)} devices")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the agent's config (TOML)")
    parser.add_argument("--duration", type=float, default=3600.0, help="stop after this many seconds")
    args = parser.parse_args()
    return asyncio.run(main_async(args.config, args.duration))


if __name__ == "__main__":
    sys.exit(main())
