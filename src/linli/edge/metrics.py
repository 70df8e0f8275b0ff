"""The agent's health for Prometheus (`/metrics`) and for people (`/health`, `linli edge status`).

Both are read from the agent's own counters at request time, on the agent's event loop (the
HTTP server runs in a thread and asks the loop for a snapshot), so they say exactly what the
`health` points say. The process's CPU and memory come from prometheus-client's process
collector.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Sequence

    from linli.edge.alerting import Alerting
    from linli.edge.config import EdgeConfig
    from linli.edge.health import PollTimings
    from linli.edge.modbus import DevicePoller
    from linli.edge.mqtt import MqttConnector

log = logging.getLogger(__name__)
SNAPSHOT_TIMEOUT_S = 5.0
# Counter, the writer figure it reports (as in the health point), what it means.
WRITER = (
    ("linli_written_lines", "written", "Lines the store confirmed"),
    ("linli_write_retries", "retried", "Write attempts retried"),
    ("linli_write_failures", "failed_writes", "Write attempts that failed"),
    ("linli_dropped_lines", "dropped", "Lines dropped because the buffer was full"),
    ("linli_dead_lettered_lines", "dead_lettered", "Lines the store refused for good"),
)


@dataclass
class DeviceState:
    site: str
    device: str
    kind: str
    connector: str  # modbus or mqtt
    online: bool
    polls: int  # polls, or messages for an MQTT device
    errors: dict[str, int]
    last_seen_ms: int
    unchanged: int = 0  # values held back by report by exception


@dataclass
class Snapshot:
    """Everything /metrics and /health say, taken at one moment on the agent's loop."""

    agent: str
    time_ms: int
    devices: list[DeviceState]
    buffer: dict[str, float]
    writer: dict[str, int]
    mqtt: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    shed: dict[str, int] = field(default_factory=dict)  # QoS 0 messages shed, by reason
    queued: int = 0  # MQTT messages received and not yet handled
    rules: dict[tuple[str, str], int] = field(default_factory=dict)
    # Cumulative (upper bound, count) buckets and the sum of Modbus poll latency and lag.
    latency: tuple[list[tuple[str, int]], float] = ([], 0.0)
    lag: tuple[list[tuple[str, int]], float] = ([], 0.0)

    def health(self) -> dict[str, Any]:
        online = sum(d.online for d in self.devices)
        return {
            "agent": self.agent,
            "time_ms": self.time_ms,
            "devices": len(self.devices),
            "devices_online": online,
            "offline": [f"{d.site}/{d.device}" for d in self.devices if not d.online],
            "buffer": self.buffer,
            "writer": self.writer,
            "mqtt": self.mqtt,
            "rejected": self.rejected,
            "shed": self.shed,
            "queued": self.queued,
            "alerts": [{"rule": r, "state": s, "series": n} for (r, s), n in sorted(self.rules.items())],
            "errors": {f"{d.site}/{d.device}": d.errors for d in self.devices if d.errors},
        }


class Agent(Protocol):
    """What the metrics read of the running agent (the agent imports this module, not the
    other way round)."""

    @property
    def config(self) -> EdgeConfig: ...
    @property
    def pollers(self) -> Sequence[DevicePoller]: ...
    @property
    def mqtt(self) -> MqttConnector | None: ...
    @property
    def alerting(self) -> Alerting: ...
    @property
    def poll_timings(self) -> PollTimings: ...
    def buffer_figures(self, time_ms: int) -> dict[str, int | float]: ...
    def writer_figures(self) -> dict[str, int]: ...


def snapshot(agent: Agent) -> Snapshot:
    """The agent's state now; call on its event loop."""
    devices = [
        DeviceState(
            p.site, p.device.id, p.profile.kind, "modbus", p.health.online, p.health.polls,
            dict(p.health.errors), p.health.last_seen_ms, p.report.suppressed,
        )
        for p in agent.pollers
    ]  # fmt: skip
    mqtt: dict[str, int] = {}
    rejected: dict[str, int] = {}
    shed: dict[str, int] = {}
    queued = 0
    if agent.mqtt is not None:
        m = agent.mqtt
        devices += [
            DeviceState(
                d.site, d.device, d.profile.kind, "mqtt", d.online, d.messages, dict(d.errors), d.last_seen_ms
            )
            for d in m.devices.values()
        ]
        mqtt = {
            "received": m.received, "stored": m.stored, "redelivered": m.redelivered,
            "ignored_retained": m.ignored_retained, "overflow": m.overflow,
            "alarms_kept": m.alarms_kept,  # QoS 0 alarms kept while readings were shed
        }  # fmt: skip
        rejected = dict(m.dead_letters)
        shed = dict(m.shed)
        queued = m.queued
    now_ms = int(time.time() * 1000)
    return Snapshot(
        agent=agent.config.agent.name,
        time_ms=now_ms,
        devices=devices,
        buffer=agent.buffer_figures(now_ms),
        writer=agent.writer_figures(),
        mqtt=mqtt,
        rejected=rejected,
        shed=shed,
        queued=queued,
        rules=dict(agent.alerting.engine.states()),
        latency=(agent.poll_timings.latency.buckets(), agent.poll_timings.latency.total),
        lag=(agent.poll_timings.lag.buckets(), agent.poll_timings.lag.total),
    )


class AgentCollector(Collector):
    """Prometheus metrics from a snapshot taken for each scrape."""

    def __init__(self, take: Any) -> None:
        self.take = take  # () -> Snapshot

    def collect(self) -> Iterator[Metric]:
        s: Snapshot = self.take()
        labels = ["site", "device", "kind", "connector"]
        key: list[str]
        online = GaugeMetricFamily("linli_device_online", "1 if the device answers or speaks", labels=labels)
        polls = CounterMetricFamily(
            "linli_device_polls", "Modbus polls, or MQTT messages, since the agent started", labels=labels
        )
        errors = CounterMetricFamily(
            "linli_device_errors", "Failed polls and refused messages, by reason", labels=[*labels, "reason"]
        )
        unchanged = CounterMetricFamily(
            "linli_device_unchanged_values",
            "Values not stored because they stayed within their deadband (report by exception)",
            labels=labels,
        )
        for d in s.devices:
            key = [d.site, d.device, d.kind, d.connector]
            online.add_metric(key, 1.0 if d.online else 0.0)
            polls.add_metric(key, d.polls)
            for reason, n in d.errors.items():
                errors.add_metric([*key, reason], n)
            if d.connector == "modbus":
                unchanged.add_metric(key, d.unchanged)
        yield from (online, polls, errors, unchanged)
        yield GaugeMetricFamily("linli_devices", "Devices configured", value=len(s.devices))
        yield GaugeMetricFamily(
            "linli_devices_online", "Devices online", value=sum(d.online for d in s.devices)
        )
        yield GaugeMetricFamily("linli_buffer_lines", "Lines waiting in the buffer", value=s.buffer["lines"])
        yield GaugeMetricFamily("linli_buffer_bytes", "Bytes waiting in the buffer", value=s.buffer["bytes"])
        yield GaugeMetricFamily(
            "linli_buffer_oldest_pending_seconds",
            "Age of the oldest line not yet written",
            value=s.buffer["oldest_pending_s"],
        )
        for name, figure, help_text in WRITER:
            yield CounterMetricFamily(name, help_text, value=s.writer[figure])
        for name, value in s.mqtt.items():
            yield CounterMetricFamily(
                f"linli_mqtt_{name}", f"MQTT messages {name.replace('_', ' ')}", value=value
            )
        rejected = CounterMetricFamily(
            "linli_mqtt_rejected", "MQTT messages refused (dead-lettered), by reason", labels=["reason"]
        )
        for reason, n in s.rejected.items():
            rejected.add_metric([reason], n)
        yield rejected
        shed = CounterMetricFamily(
            "linli_mqtt_shed", "QoS 0 messages shed past a full inbox, by reason", labels=["reason"]
        )
        for reason, n in s.shed.items():
            shed.add_metric([reason], n)
        yield shed
        yield GaugeMetricFamily(
            "linli_mqtt_queued", "MQTT messages received, not yet handled", value=s.queued
        )
        rules = GaugeMetricFamily(
            "linli_alerts", "Series of each rule pending or firing now", labels=["rule", "state"]
        )
        for (rule, state), n in s.rules.items():
            rules.add_metric([rule, state], n)
        yield rules
        for name, help_text, (buckets, total) in (
            ("linli_poll_latency_seconds", "Time a Modbus poll took, request to last answer", s.latency),
            ("linli_poll_lag_seconds", "How late a Modbus poll started after its scheduled time", s.lag),
        ):
            if buckets:
                yield HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=total)


class HealthServer:
    """`/metrics` and `/health` on a local address, served from a thread."""

    def __init__(self, agent: Agent, host: str, port: int) -> None:
        self.agent = agent
        self.loop: asyncio.AbstractEventLoop | None = None
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(self.take))
        self.registry.register(ProcessCollector(registry=None))
        handler = _handler(self)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="linli-metrics", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{host!s}:{port}"

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread.start()
        log.info("agent: /metrics and /health on http://%s", self.address)

    def take(self) -> Snapshot:
        """A snapshot made on the agent's loop, so no counter moves while it is read."""
        assert self.loop is not None

        async def on_loop() -> Snapshot:
            return snapshot(self.agent)

        return asyncio.run_coroutine_threadsafe(on_loop(), self.loop).result(SNAPSHOT_TIMEOUT_S)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, kind = generate_latest(server.registry), CONTENT_TYPE_LATEST
            elif self.path == "/health":
                body, kind = json.dumps(server.take().health()).encode(), "application/json"
            else:
                self.send_error(404, "try /metrics or /health")
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass  # a scrape every few seconds is not news

    return Handler
