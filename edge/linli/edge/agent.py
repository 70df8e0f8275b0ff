"""The edge agent: pollers for every configured device, feeding one batched writer."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from linli.catalog.profile import get_profile
from linli.edge.config import EdgeConfig
from linli.edge.modbus import DevicePoller, Endpoint
from linli.edge.mqtt import MqttConnector
from linli.edge.sinks import Sink, make_sink
from linli.edge.writer import BatchWriter

log = logging.getLogger(__name__)


@dataclass
class Totals:
    """Counts across the agent, for the live view and the logs."""

    readings: int = 0
    lines: int = 0


class Agent:
    """Runs every poller and the writer until stopped, then flushes."""

    def __init__(self, config: EdgeConfig, sink: Sink | None = None) -> None:
        self.config = config
        w = config.writer
        self.writer = BatchWriter(
            sink or make_sink(w),
            batch_size=w.batch_size,
            flush_interval=w.flush_interval,
            max_pending=w.max_pending,
        )
        self.totals = Totals()
        self.endpoints: dict[tuple[str, int], Endpoint] = {}
        self.pollers: list[DevicePoller] = []
        for site, device in config.devices():
            profile = get_profile(device.profile)
            if profile.modbus is None:
                continue
            key = (device.host, device.port)
            if key not in self.endpoints:
                self.endpoints[key] = Endpoint(device.host, device.port, device.timeout)
            self.pollers.append(
                DevicePoller(
                    site=site.id,
                    device=device,
                    profile=profile,
                    endpoint=self.endpoints[key],
                    emit=self._emit,
                )
            )

        has_mqtt = any(get_profile(d.profile).mqtt is not None for _, d in config.devices())
        self.mqtt = MqttConnector(config, self._emit_mqtt) if has_mqtt else None

    def _emit_mqtt(self, lines: list[str]) -> None:
        self.totals.lines += len(lines)
        self.writer.submit(lines)

    def _emit(self, lines: list[str]) -> None:
        # The last line of every batch a poller emits is its health point.
        self.totals.readings += len(lines) - 1
        self.totals.lines += len(lines)
        self.writer.submit(lines)

    async def run(self, stop: asyncio.Event, *, drain_deadline_s: float = 10.0) -> bool:
        """Poll and write until `stop` is set; True when everything was written."""
        log.info(
            "agent %s: %d Modbus devices on %d endpoints, %d MQTT devices -> %s",
            self.config.agent.name,
            len(self.pollers),
            len(self.endpoints),
            len(self.mqtt.devices) if self.mqtt else 0,
            self.writer.sink.target,
        )
        writer_stop = asyncio.Event()
        writer_task = asyncio.create_task(self.writer.run(writer_stop), name="writer")
        poll_tasks = [asyncio.create_task(p.run(stop), name=p.name) for p in self.pollers]
        if self.mqtt is not None:
            poll_tasks.append(asyncio.create_task(self.mqtt.run(stop), name="mqtt"))
        try:
            await stop.wait()
            # Let in-flight polls finish (bounded by their timeouts) so their readings are kept.
            await asyncio.gather(*poll_tasks, return_exceptions=True)
        finally:
            writer_stop.set()
            await writer_task
            complete = await self.writer.drain(drain_deadline_s)
            for endpoint in self.endpoints.values():
                endpoint.close()
            self.writer.sink.close()
        log.info(
            "agent stopped: %d lines written, %d pending lost",
            self.writer.stats.written,
            self.writer.pending,
        )
        return complete
