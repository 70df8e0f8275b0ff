"""The edge agent: pollers for every configured device, feeding one batched writer."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from linli.catalog.lineprotocol import FieldValue, format_line
from linli.catalog.names import AGENT_KIND, HEALTH_MEASUREMENT
from linli.catalog.profile import get_profile
from linli.catalog.wording import plural
from linli.edge import memory
from linli.edge.alerting import Alerting, Interlock
from linli.edge.backoff import Backoff
from linli.edge.buffer import DurableBuffer
from linli.edge.config import EdgeConfig
from linli.edge.health import PollTimings
from linli.edge.metrics import HealthServer
from linli.edge.modbus import DevicePoller, Endpoint
from linli.edge.mqtt import MqttConnector
from linli.edge.sinks import Sink, make_sink
from linli.edge.spool import Done, Spool
from linli.edge.writer import BatchWriter

log = logging.getLogger(__name__)
HEALTH_PREFIX = f"{HEALTH_MEASUREMENT},"  # how every health line starts

# Staged lines past which MQTT backpressure starts even before the buffer fills (a slow disk).
MAX_STAGED = 200_000
# How often the agent writes its own health point when no [mqtt] table sets an interval.
HEALTH_S = 5.0


@dataclass
class Totals:
    """Counts across the agent, for the live view and the logs."""

    readings: int = 0  # reading lines from the Modbus pollers
    device_health: int = 0  # health lines from the Modbus pollers
    lines: int = 0  # every line, the agent's own and MQTT's included


@dataclass
class Reload:
    """How a running agent takes a new config: `wanted` is set (SIGHUP), `load` reads it."""

    load: Callable[[], EdgeConfig | None]
    wanted: asyncio.Event = field(default_factory=asyncio.Event)


class Agent:
    """Runs every connector, the durable buffer and the writer until stopped, then flushes."""

    def __init__(
        self, config: EdgeConfig, sink: Sink | None = None, buffer: DurableBuffer | None = None
    ) -> None:
        """`buffer` replaces the configured one (`linli edge check` uses one in memory)."""
        self.config = config
        w = config.writer
        b = config.buffer
        self.buffer = buffer or DurableBuffer(
            config.buffer_path(), max_bytes=int(b.max_mb * 1e6), sync=b.sync
        )
        # Chunks of one batch: the writer then never rewrites the rest of a larger one.
        self.buffer.chunk_lines = w.batch_size
        # SQLite runs in a thread of its own: commits wait for the disk, never the event loop.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="linli-buffer")
        self.writer = BatchWriter(
            sink or make_sink(w),
            self.buffer,
            self._db,
            batch_size=w.batch_size,
            flush_interval=w.flush_interval,
            backoff=Backoff(initial=0.5, maximum=w.retry_max),
        )
        self.spool = Spool(self.buffer, self._db, self.writer.notify)
        self.totals = Totals()
        self.poll_timings = PollTimings()  # outlives reloads, as Prometheus counters must
        self.health_server: HealthServer | None = None  # while running, with [agent] metrics
        self._connect(config)

    def _connect(self, config: EdgeConfig) -> None:
        """The connectors, rules and interlocks of `config`; the buffer and the writer stay."""
        self.config = config
        self.alerting = Alerting(config, self._emit_alerts)
        self.endpoints: dict[tuple[str, int], Endpoint] = {}
        self.pollers: list[DevicePoller] = []
        for site, device in config.devices():
            profile = get_profile(device.profile)
            if profile.modbus is None:
                continue
            key = (device.host, device.port)
            if key not in self.endpoints:
                self.endpoints[key] = Endpoint(device.host, device.port, device.timeout)
            group = profile.modbus.group
            ports = device.count or (group.count if group else 1)
            interlocks = [
                Interlock(c, profile, site=site.id, device=device.id, ports=ports, edge=config.agent.name)
                for c in config.interlocks
                if c.kind == profile.kind and c.site in (None, site.id) and c.device in (None, device.id)
            ]
            self.pollers.append(
                DevicePoller(
                    site=site.id,
                    device=device,
                    profile=profile,
                    endpoint=self.endpoints[key],
                    emit=self._emit,
                    observe=self.alerting.observe if profile.kind in self.alerting.kinds else None,
                    interlocks=interlocks,
                    acted=self.alerting.record,
                    timings=self.poll_timings,
                )
            )

        has_mqtt = any(get_profile(d.profile).mqtt is not None for _, d in config.devices())
        self.mqtt = (
            MqttConnector(
                config,
                self._emit_mqtt,
                self.backpressure,
                self.spool.commit,
                memory=self.buffer.meta(""),
                remember=self._remember,
                delivered=self.buffer.delivered(),
            )
            if has_mqtt
            else None
        )
        if self.mqtt is not None:
            self.mqtt.observe = self.alerting.observe
            self.mqtt.observed_kinds = self.alerting.kinds

    def _remember(self, key: str, value: str) -> None:
        # The buffer belongs to its thread; a fact to keep goes there like every write.
        self._db.submit(self.buffer.remember, key, value)

    def backpressure(self) -> bool:
        """True while the buffer is nearly full: stop taking messages the broker can keep."""
        limit = self.config.buffer.backpressure_at * self.buffer.max_bytes
        return self.buffer.stats.bytes >= limit or self.spool.staged >= MAX_STAGED

    def _emit_alerts(self, lines: list[str]) -> None:
        self.totals.lines += len(lines)
        self.spool.submit(lines)

    def _emit_mqtt(self, lines: list[str], done: Done | None, delivered: bytes) -> None:
        self.totals.lines += len(lines)
        self.spool.submit(lines, done, delivered)

    def _emit(self, lines: list[str]) -> None:
        # A poller's batch holds its readings and, when one is due, its health point.
        readings = sum(not line.startswith(HEALTH_PREFIX) for line in lines)
        self.totals.readings += readings
        self.totals.device_health += len(lines) - readings
        self.totals.lines += len(lines)
        self.spool.submit(lines)

    def buffer_figures(self, time_ms: int) -> dict[str, int | float]:
        """What waits in the buffer: lines, bytes, and the age of the oldest (the health point's
        and /metrics' figures)."""
        b = self.buffer.stats
        oldest = round(max(0, time_ms - b.oldest_ms) / 1000, 3) if b.oldest_ms else 0.0
        return {"lines": b.lines, "bytes": b.bytes, "oldest_pending_s": oldest}

    def writer_figures(self) -> dict[str, int]:
        """What was written, retried, failed, dropped and dead-lettered since the start."""
        b, w = self.buffer.stats, self.writer.stats
        return {
            "written": w.written,
            "retried": w.retried,
            "failed_writes": w.failed_attempts,
            "dropped": b.dropped,
            "dead_lettered": w.dead_lettered,
        }

    def health_line(self, time_ms: int) -> str:
        """The agent's own health point: buffer depth and age, and what was written, retried, dropped."""
        buffer = self.buffer_figures(time_ms)
        fields: dict[str, FieldValue] = {
            "buffer_lines": buffer["lines"],
            "buffer_bytes": buffer["bytes"],
            "oldest_pending_s": buffer["oldest_pending_s"],
            **self.writer_figures(),
            "backpressure": self.backpressure(),
        }
        mqtt = self.mqtt
        if mqtt is not None:
            # What the MQTT connector refused, by reason (each kept on the dead-letter topic),
            # and what it let go: retained garbage seen before, QoS 0 past a full inbox (by reason).
            fields["rejected"] = mqtt.dead_letters.total()
            fields.update((f"rejected_{reason}", n) for reason, n in mqtt.dead_letters.items())
            fields["ignored_retained"] = mqtt.ignored_retained
            fields["redelivered"] = mqtt.redelivered
            fields["overflow"] = mqtt.overflow
            fields.update((f"shed_{reason}", n) for reason, n in mqtt.shed.items())
        # One health measurement for everything (the schema rules): the agent is a kind of its own.
        tags = {"kind": AGENT_KIND, "device": self.config.agent.name}
        return format_line(HEALTH_MEASUREMENT, tags, fields, time_ms)

    async def _report(self, stop: asyncio.Event) -> None:
        interval = self.config.mqtt.health_interval if self.config.mqtt else HEALTH_S
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            self._emit_own()

    def _emit_own(self) -> None:
        self.totals.lines += 1
        self.spool.submit([self.health_line(int(time.time() * 1000))])

    def _starting_log(self) -> None:
        log.info(
            "agent %s: %s on %s, %s -> %s; buffer %s, %s",
            self.config.agent.name,
            plural(len(self.pollers), "Modbus device"),
            plural(len(self.endpoints), "endpoint"),
            plural(len(self.mqtt.devices) if self.mqtt else 0, "MQTT device"),
            self.writer.sink.target,
            self.buffer.path,
            plural(self.buffer.stats.lines, "line"),
        )

    def _start_connectors(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(p.run(stop), name=p.name) for p in self.pollers]
        tasks.append(asyncio.create_task(self._report(stop), name="report"))
        tasks.append(asyncio.create_task(self.alerting.run(stop), name="alerts"))
        if self.mqtt is not None:
            tasks.append(asyncio.create_task(self.mqtt.run(stop), name="mqtt"))
        return tasks

    async def _until_stop_or_reload(self, stop: asyncio.Event, reload: Reload | None) -> EdgeConfig | None:
        """None once `stop` is set; a new, valid config once a reload gives one."""
        while True:
            waits = {asyncio.create_task(stop.wait())}
            if reload is not None:
                waits.add(asyncio.create_task(reload.wanted.wait()))
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()
            if stop.is_set():
                return None
            assert reload is not None
            reload.wanted.clear()
            # Read and built in a thread: a large config takes seconds, in which the connectors
            # poll on and /metrics answers; a stop meanwhile is not held up by it.
            loading = asyncio.create_task(asyncio.to_thread(reload.load))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if stop.is_set():
                return None
            new = loading.result()
            if new is not None:
                return new
            log.error("reload: the new config is refused (see above); the running one stays")

    def _reconnect(self, new: EdgeConfig) -> None:
        """The connectors of the new config, on the same buffer, writer and store."""
        kept = ("writer", "buffer")
        changed = [k for k in kept if getattr(new, k) != getattr(self.config, k)]
        if changed or new.agent.name != self.config.agent.name:
            log.warning("reload: [agent] name, [writer] and [buffer] take effect at the next start, not now")
            agent = new.agent.model_copy(update={"name": self.config.agent.name})
            new = new.model_copy(update={"agent": agent, **{k: getattr(self.config, k) for k in kept}})
        before = {(s.id, d.id) for s, d in self.config.devices()}
        for endpoint in self.endpoints.values():
            endpoint.close()
        self._connect(new)
        after = {(s.id, d.id) for s, d in new.devices()}
        log.info(
            "reload: %d devices (%d added, %d removed), %d rules",
            len(after),
            len(after - before),
            len(before - after),
            sum(len(r) for r in self.alerting.engine.rules.values()),
        )
        self._starting_log()

    def _serve_health(self) -> HealthServer | None:
        """/metrics and /health on `[agent] metrics`, if set; the agent runs on without them."""
        address = self.config.agent.metrics
        if not address:
            return None
        host, _, port = address.rpartition(":")
        try:
            server = HealthServer(self, host.strip("[]"), int(port))
        except OSError as exc:
            log.error("agent: cannot serve /metrics on %s: %s; running without it", address, exc)
            return None
        server.start(asyncio.get_running_loop())
        self.health_server = server
        return server

    async def run(
        self,
        stop: asyncio.Event,
        *,
        drain_deadline_s: float = 10.0,
        reload: Reload | None = None,
    ) -> bool:
        """Poll and write until `stop` is set; True when everything was written.

        `reload` (with its event set, on SIGHUP) gives a new config, or None when the new one
        does not validate: the connectors stop as on a clean stop (what they took is on disk
        and acknowledged) and start again from the new config, while the buffer, the writer and
        the MQTT session stay. A config refused leaves the running one as it is.
        """
        self._starting_log()
        health = self._serve_health()
        inner_stop = asyncio.Event()
        writer_task = asyncio.create_task(self.writer.run(inner_stop), name="writer")
        spool_task = asyncio.create_task(self.spool.run(inner_stop), name="spool")
        try:
            while True:
                part = asyncio.Event()
                tasks = self._start_connectors(part)
                # What the config built lives until the next reload: 20,000 MQTT devices' state
                # is a few hundred thousand objects, which every full collection would walk
                # (about 60 ms, several times a minute) for cycles it never has.
                gc.freeze()
                new = await self._until_stop_or_reload(stop, reload)
                part.set()
                # Let in-flight polls finish (bounded by their timeouts) so their readings are kept.
                await asyncio.gather(*tasks, return_exceptions=True)
                if new is None:
                    break
                self._reconnect(new)
                # The old config is dropped now: what it took goes back to the system, or a
                # reload to 25,000 devices and back to one kept 175 MB more resident for good.
                memory.give_back()
                resident = memory.resident_mb()
                if resident is not None:
                    log.info("reload: done, %.0f MB resident", resident)
        finally:
            self._emit_own()
            inner_stop.set()
            await spool_task  # the last commit: everything taken is on disk now
            await writer_task
            complete = await self.writer.drain(drain_deadline_s)
            for endpoint in self.endpoints.values():
                endpoint.close()
            self.writer.sink.close()
            self._db.submit(self.buffer.close).result()
            self._db.shutdown()
            if health is not None:
                await asyncio.to_thread(health.stop)
        log.info(
            "agent stopped: %s written, %s kept in the buffer for the next start",
            plural(self.writer.stats.written, "line"),
            plural(self.writer.pending, "line"),
        )
        return complete
