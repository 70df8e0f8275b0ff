"""The live terminal view of what flows through the agent."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections import Counter
from typing import TextIO

from linli.catalog.wording import plural
from linli.edge.agent import Agent

CLEAR = "\x1b[H\x1b[2J"


# What a person watching wants to see of a device first: what it does now, not its settings.
FIRST = ("total_power", "power", "current", "temperature", "cabinet_temp", "voltage", "pressure", "level")


def render(agent: Agent, readings_per_s: float, width: int = 100, max_rows: int = 12) -> str:
    """One screen: totals, then a row per device (online, latency, last values)."""
    pollers = agent.pollers
    mqtt = list(agent.mqtt.devices.values()) if agent.mqtt is not None else []
    online = sum(p.health.online for p in pollers) + sum(d.online for d in mqtt)
    errors: Counter[str] = Counter()
    for p in pollers:
        errors.update(p.health.errors)
    for d in mqtt:
        errors.update(d.errors)
    rejected = agent.mqtt.dead_letters.total() if agent.mqtt is not None else 0
    stats = agent.writer.stats
    total = len(pollers) + len(mqtt)
    lines = [
        f"linli edge  devices online {online}/{total}   readings/s {readings_per_s:,.0f}   "
        f"written {stats.written:,}   buffered {agent.writer.pending:,}   "
        f"dropped {agent.buffer.stats.dropped:,}   rejected {rejected:,}",
        f"store {agent.writer.sink.target}   "
        + (f"LAST WRITE ERROR: {stats.last_error}" if stats.failed_attempts else "writes ok"),
        "errors: " + (", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"),
        "",
        f"{'device':<28}{'state':<9}{'poll ms':>8}  last values",
    ]
    for p in pollers[:max_rows]:
        h = p.health
        state = "online" if h.online else "OFFLINE"
        summary = _summary(p.last)
        if not h.online and h.last_error:
            summary = h.last_error
        row = f"{p.name:<28}{state:<9}{h.latency_s * 1000:>8.1f}  {summary}"
        lines.append(row[:width])
    if len(pollers) > max_rows:
        lines.append(f"... and {plural(len(pollers) - max_rows, 'more device')}")
    if mqtt:
        lines.append(f"MQTT: {sum(d.online for d in mqtt)}/{plural(len(mqtt), 'device')} online")
    return "\n".join(lines)


def _summary(last: dict[int | None, dict[str, int | float]]) -> str:
    device = last.get(None, {})
    chosen = [k for k in FIRST if k in device] or list(device)
    parts = [f"{k}={device[k]:g}" for k in chosen[:3]]
    channels = [fields for ch, fields in last.items() if ch is not None]
    if channels and "state" in channels[0]:
        states = Counter(int(f.get("state", 0)) for f in channels)
        parts.append(f"charging {states.get(1, 0)}/{len(channels)}")
    return "  ".join(parts)


async def run_view(
    agent: Agent, stop: asyncio.Event, interval: float = 1.0, out: TextIO = sys.stdout
) -> None:
    """Redraw every `interval` on a terminal; print one summary line per interval elsewhere."""
    tty = out.isatty()
    last_count, last_t = agent.totals.readings, time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        now = time.monotonic()
        rate = (agent.totals.readings - last_count) / max(now - last_t, 1e-6)
        last_count, last_t = agent.totals.readings, now
        # A wide terminal shows more of each device's last values; a narrow one, what fits.
        screen = render(agent, rate, width=shutil.get_terminal_size((100, 24)).columns if tty else 100)
        if tty:
            out.write(CLEAR + screen + "\n")
        else:
            out.write(screen.splitlines()[0] + "\n")
        out.flush()
