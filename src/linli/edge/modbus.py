"""The Modbus TCP connector: polls devices per their profile, one task per device.

Devices behind one gateway (same host and port) share one connection and take turns
on it, as an RS485 line requires; devices at different addresses poll in parallel,
so a dead or slow device never delays the others. A device that stops answering is
marked offline and retried with backoff; it is never fatal. The connection itself, and
why a request failed, are in `modbusendpoint`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from pydantic import ValidationError
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from linli.catalog.derive import finish_device_row
from linli.catalog.lineprotocol import format_fields, series_key
from linli.catalog.profile import Profile, RegisterType
from linli.catalog.readings import MAX_TIME_MS, MIN_TIME_MS, Reading
from linli.catalog.registers import DecodeError, Value
from linli.edge.backoff import Backoff
from linli.edge.config import DeviceConfig
from linli.edge.deadband import Reporter, deadbands
from linli.edge.health import HealthReport, PollTimings, health_line
from linli.edge.modbusendpoint import MODBUS_EXCEPTIONS, Endpoint, PollError
from linli.edge.modbusfailure import PymodbusNoise
from linli.edge.readplan import Read, plan_reads
from linli.edge.rules import AlertEvent
from linli.edge.sleeper import Sleeper

if TYPE_CHECKING:
    from linli.edge.alerting import Interlock

__all__ = [
    "MODBUS_EXCEPTIONS",
    "OFFLINE_AFTER",
    "SETTINGS_S",
    "SPREAD_STEPS",
    "DeviceHealth",
    "DevicePoller",
    "Emit",
    "Endpoint",
    "Observe",
    "PollError",
    "first_poll",
]

log = logging.getLogger(__name__)
# pymodbus logs every failed request (with hex dumps) at ERROR; linli classifies and logs each
# failure itself, once per device and episode. Its protocol tracebacks reach asyncio's logger.
logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)  # its one logger
logging.getLogger("asyncio").addFilter(PymodbusNoise())

# Consecutive failed polls before a device is shown offline: one lost frame is noise.
OFFLINE_AFTER = 2
# Polls start on a grid of this many steps per interval (see first_poll).
SPREAD_STEPS = 20
# Configuration registers (`setting = true` in the profile) are read this often, and at start.
SETTINGS_S = 60.0


@dataclass
class DeviceHealth:
    """What the agent knows about one device's liveness."""

    online: bool = False
    consecutive_failures: int = 0
    last_seen_ms: int = 0
    latency_s: float = 0.0
    lag_s: float = 0.0
    max_lag_s: float = 0.0
    polls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_error: str = ""


Emit = Callable[[list[str]], None]
# kind, tags, field values, time (ms), port: every reading, for the alert rules.
Observe = Callable[[str, Mapping[str, str], Mapping[str, Value], int, str | None], None]


def first_poll(now: float, interval: float, rng: random.Random | None = None) -> float:
    """When a device polled every `interval` first polls, in loop time after `now`.

    Devices are spread over the interval so that they do not all poll at the same instant, on
    a grid of SPREAD_STEPS: the devices due in one step start in one turn of the event loop,
    which wakes once for them all rather than once for each (a fifth of the agent's CPU at 100
    devices a second).
    """
    step = interval / SPREAD_STEPS
    return (math.floor(now / step) + 1 + (rng or random).randrange(SPREAD_STEPS)) * step


class DevicePoller:
    """Polls one device at its interval and emits line-protocol lines."""

    def __init__(
        self,
        *,
        site: str,
        device: DeviceConfig,
        profile: Profile,
        endpoint: Endpoint,
        emit: Emit,
        observe: Observe | None = None,
        interlocks: list[Interlock] | None = None,
        acted: Callable[[list[AlertEvent]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timings: PollTimings | None = None,
    ) -> None:
        """`observe` sees every reading; `interlocks` act on it and report through `acted`;
        `clock` times the health heartbeat; `timings` collects latency and lag for /metrics."""
        if profile.modbus is None:
            raise ValueError(f"profile '{profile.kind}' has no Modbus map")
        mb = profile.modbus
        self.site = site
        self.device = device
        self.profile = profile
        self.endpoint = endpoint
        self.emit = emit
        self.observe = observe
        self.interlocks = interlocks or []
        self.acted = acted
        self.unit = device.unit if device.unit is not None else mb.unit
        plan = partial(
            plan_reads,
            max_registers=device.max_registers or mb.max_registers_per_read,
            max_gap=mb.max_gap if device.max_gap is None else device.max_gap,
            byte_order=mb.byte_order,
            word_order=mb.word_order,
        )
        points = profile.modbus_points(device.count)
        # Settings are planned apart, so that a poll between their reads asks for nothing else.
        self.live_reads: list[Read] = plan([p for p in points if not p[1].setting])
        self.setting_reads: list[Read] = plan([p for p in points if p[1].setting])
        self.reads: list[Read] = self.live_reads + self.setting_reads
        self.polled: list[Read] = self.reads  # the reads of the last poll, in order
        self._settings_due = 0.0
        self.health = DeviceHealth()
        # A health point every poll would be most of what a district writes once readings are
        # reported by exception: written on a change of state, and every `health_every`.
        self._health_every = device.health_every if device.report_by_exception else 0.0
        self._health_report = HealthReport()
        self._clock = clock
        self.timings = timings if timings is not None else PollTimings()
        # The last decoded values by channel, for the live view and the probe command.
        self.last: dict[int | None, dict[str, Value]] = {}
        self._tags = {"site": site, "device": device.id, **device.tags}
        self._health_tags = {"site": site, "device": device.id, "kind": profile.kind}
        self._channel_tag = profile.group_tag or "channel"
        self._logged_decode: set[tuple[str, str]] = set()
        self._series_keys: dict[int | None, str] = {}
        self._valid_shapes: set[tuple[int | None, tuple[str, ...]]] = set()
        self._retry = Backoff(initial=device.interval, maximum=max(device.interval, 30.0))
        self._next_attempt = 0.0
        self._offline_reason = ""
        mb = profile.modbus
        self._derives = bool(mb.faults) or any(
            p.decimals_from or p.offset_from or not p.store for p in mb.points
        )
        self._faulted: set[str] = set()
        self._fresh = False
        bands = (
            deadbands(profile, device.tags, overrides=device.deadband, store_every=device.store_every)
            if device.report_by_exception
            else {}
        )
        self.report = Reporter(bands)

    @property
    def name(self) -> str:
        return f"{self.site}/{self.device.id}"

    async def run(self, stop: asyncio.Event) -> None:
        """Poll at a fixed rate until `stop`; missed ticks are skipped, not bunched up."""
        interval = self.device.interval
        loop = asyncio.get_running_loop()
        scheduled = first_poll(loop.time(), interval)
        async with Sleeper(stop) as sleeper:
            while not stop.is_set():
                delay = scheduled - loop.time()
                if delay > 0 and not await sleeper.sleep(delay):
                    break
                self.health.lag_s = max(0.0, loop.time() - scheduled)
                self.health.max_lag_s = max(self.health.max_lag_s, self.health.lag_s)
                self.timings.lag.observe(self.health.lag_s)
                try:
                    await self.poll_and_emit()
                except Exception:
                    # A bug must cost one poll of one device, never the agent.
                    self.health.errors["internal"] += 1
                    log.exception("%s: poll failed unexpectedly", self.name)
                scheduled += interval
                now = loop.time()
                if scheduled < now:
                    scheduled += ((now - scheduled) // interval + 1) * interval

    async def poll_and_emit(self) -> None:
        """One tick: poll unless backing off, then emit readings and health."""
        time_ms = int(time.time() * 1000)
        lines: list[str] = []
        if time.monotonic() >= self._next_attempt:
            self._fresh = False
            lines = await self._attempt(time_ms)
            if self._fresh:
                # Safety first: a stop goes out in the same tick that saw the breach.
                if self.interlocks:
                    await self._interlock(time_ms)
                if self.observe is not None:
                    for channel, fields in self.last.items():
                        port = None if channel is None else str(channel)
                        self.observe(self.profile.kind, self._tags, fields, time_ms, port)
        if self._health_due():
            lines.append(self._health_line(time_ms))
        self.emit(lines)

    async def _interlock(self, time_ms: int) -> None:
        for lock in self.interlocks:
            for stop in lock.check(self.last, time_ms):
                if stop.coils and not await self._write_coils(stop.coils):
                    lock.release(stop.event.port)  # not done: try again at the next poll
                    continue
                if self.acted is not None:
                    self.acted([stop.event])

    async def _write_coils(self, addresses: list[int]) -> bool:
        """Write 1 to each coil; False (logged, counted) if the device did not take them all."""
        try:
            async with self.endpoint.lock:
                client = await self.endpoint.client()
                for address in addresses:
                    resp = await client.write_coil(address, True, device_id=self.unit)
                    if resp.isError():
                        raise PollError(
                            "interlock", f"coil {address}: Modbus exception {resp.exception_code}"
                        )
        except (PollError, ModbusException, OSError) as exc:
            self.health.errors["interlock_failed"] += 1
            log.error("%s: interlock could not write its coils %s: %s", self.name, addresses, exc)
            return False
        log.warning("%s: interlock wrote coils %s", self.name, addresses)
        return True

    async def _attempt(self, time_ms: int) -> list[str]:
        started = time.perf_counter()
        try:
            blocks = await self.poll()
        except PollError as exc:
            self._failed(exc)
            return []
        self.health.latency_s = time.perf_counter() - started
        self.timings.latency.observe(self.health.latency_s)
        self._succeeded(time_ms)
        return self.decode(blocks, time_ms)

    async def poll(self) -> list[list[int]]:
        """Run the planned reads (the settings every SETTINGS_S); PollError on timeout,
        refusal or Modbus exception. `polled` says which reads the blocks are."""
        now = time.monotonic()
        reads = self.reads_due(now)
        async with self.endpoint.lock:
            client = await self.endpoint.client()
            blocks = [await self._read(client, read) for read in reads]
        self.took(reads, now)
        return blocks

    def reads_due(self, now: float) -> list[Read]:
        """The reads of a poll at `now`: the live ones, and the settings when they are due."""
        return self.reads if now >= self._settings_due else self.live_reads

    def took(self, reads: list[Read], now: float) -> None:
        """`reads` were answered at `now`: `decode` takes their blocks, the settings wait again."""
        if reads is self.reads and self.setting_reads:
            self._settings_due = now + SETTINGS_S
        self.polled = reads

    async def _read(self, client: AsyncModbusTcpClient, read: Read) -> list[int]:
        call = {
            RegisterType.HOLDING: client.read_holding_registers,
            RegisterType.INPUT: client.read_input_registers,
            RegisterType.COIL: client.read_coils,
            RegisterType.DISCRETE: client.read_discrete_inputs,
        }[read.table]
        try:
            resp: ModbusPDU = await call(read.address, count=read.count, device_id=self.unit)
        except ModbusException as exc:
            reason, detail = self.endpoint.failure()
            self.endpoint.reset()
            raise PollError(reason, f"{read.table} {read.address}+{read.count}: {detail}") from exc
        except OSError as exc:
            self.endpoint.reset()
            raise PollError("closed", f"{read.table} {read.address}+{read.count}: {exc}") from exc
        if resp.isError():
            code = resp.exception_code
            text = MODBUS_EXCEPTIONS.get(code, "unknown")
            raise PollError(
                f"exception_{code}",
                f"{read.table} {read.address}+{read.count}: Modbus exception {code} ({text})",
            )
        if read.table.is_bit:
            return [1 if b else 0 for b in resp.bits[: read.count]]
        got = len(resp.registers)
        if got < read.count:
            raise PollError("short_response", f"asked {read.count} registers, got {got}")
        if got > read.count:
            # Not this request's answer (or a broken device): none of its values can be trusted.
            raise PollError(
                "malformed",
                f"{read.table} {read.address}+{read.count}: asked {read.count} registers, got {got}",
            )
        return list(resp.registers)

    def decode(self, blocks: list[list[int]], time_ms: int) -> list[str]:
        """Readings from the raw blocks, one per channel, as line protocol."""
        rows: dict[int | None, dict[str, Value]] = {}
        for read, block in zip(self.polled, blocks, strict=True):
            read.rows_into(block, rows, self._bad_value)
        if self._derives and None in rows:
            assert self.profile.modbus is not None
            rows[None], dropped = finish_device_row(self.profile.modbus, rows[None])
            for problem in dropped:
                self._bad_value(None, problem)
            self._note_sensor_faults(rows[None])
            if not rows[None]:
                del rows[None]
        self.last = rows
        self._fresh = True
        lines = []
        measurement = self.profile.measurement
        for channel, fields in rows.items():
            # The decoders give finite numbers only; what else a Reading checks (names, tags,
            # clashes) depends on the field names, so it is checked once per set of names.
            shape = (channel, tuple(fields))
            if shape not in self._valid_shapes or not MIN_TIME_MS <= time_ms <= MAX_TIME_MS:
                try:
                    Reading(
                        measurement=measurement,
                        tags=self._channel_tags(channel),
                        fields=fields,
                        time_ms=time_ms,
                    )
                except ValidationError as exc:
                    self.health.errors["invalid_reading"] += 1
                    log.error("%s: reading rejected: %s", self.name, exc)
                    continue
                self._valid_shapes.add(shape)
            # The series key never changes for a channel; format it once, not every poll.
            key = self._series_keys.get(channel)
            if key is None:
                key = self._series_keys[channel] = series_key(measurement, self._channel_tags(channel))
            stored = self.report.keep(channel, fields, time_ms) if self.report.bands else fields
            if stored:
                lines.append(f"{key} {format_fields(stored)} {time_ms}")
        return lines

    def _note_sensor_faults(self, row: dict[str, Value]) -> None:
        """Log a sensor fault when it starts and when it clears, not every poll."""
        assert self.profile.modbus is not None
        for fault in self.profile.modbus.faults:
            on = row.get(fault.field) is True
            if on and fault.field not in self._faulted:
                self._faulted.add(fault.field)
                log.warning(
                    "%s: %s: %s is %s, outside %g-%g; %s not stored",
                    self.name,
                    fault.field,
                    fault.point,
                    row.get(fault.point),
                    fault.min,
                    fault.max,
                    ", ".join(fault.drops),
                )
            elif not on and fault.field in self._faulted:
                self._faulted.discard(fault.field)
                log.info("%s: %s cleared", self.name, fault.field)

    def _channel_tags(self, channel: int | None) -> dict[str, str]:
        return self._tags if channel is None else {**self._tags, self._channel_tag: str(channel)}

    def _bad_value(self, channel: int | None, exc: DecodeError) -> None:
        self.health.errors[exc.reason] += 1
        key = (f"{channel}:{exc.field}", exc.reason)
        if key not in self._logged_decode:
            self._logged_decode.add(key)
            where = f" {self._channel_tag} {channel}" if channel is not None else ""
            log.warning("%s%s: value dropped: %s (logged once)", self.name, where, exc)

    def _succeeded(self, time_ms: int) -> None:
        health = self.health
        health.polls += 1
        health.last_seen_ms = time_ms
        if not health.online:
            log.info("%s: online (%s, unit %d)", self.name, self.endpoint.name, self.unit)
        health.online = True
        health.consecutive_failures = 0
        self._offline_reason = ""
        self._retry.reset()
        self._next_attempt = 0.0

    def _failed(self, exc: PollError) -> None:
        health = self.health
        health.polls += 1
        health.errors[exc.reason] += 1
        health.consecutive_failures += 1
        health.last_error = str(exc)
        if health.consecutive_failures >= OFFLINE_AFTER:
            # Once per offline spell, and again only if the reason changes.
            if self._offline_reason != exc.reason:
                log.warning("%s: offline: %s", self.name, exc)
                self._offline_reason = exc.reason
            health.online = False
            self.report.forget()  # when it answers again, its first values are all stored
            self._next_attempt = time.monotonic() + self._retry.next_delay()

    def _health_due(self) -> bool:
        """Whether this poll writes a health point: the state changed, or the last is old."""
        online, errors, now = self.health.online, self.health.errors.total(), self._clock()
        if not self._health_report.due(online, errors, now, self._health_every):
            return False
        self._health_report.mark(online, errors, now)
        return True

    def _health_line(self, time_ms: int) -> str:
        h = self.health
        return health_line(
            self._health_tags,
            time_ms,
            online=h.online,
            errors=h.errors,
            latency_s=h.latency_s,
            last_seen_ms=h.last_seen_ms,
            polls=h.polls,
            lag_ms=round(h.lag_s * 1000, 3),
            unchanged=self.report.suppressed,
        )
