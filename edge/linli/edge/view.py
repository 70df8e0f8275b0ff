"""The live terminal view of what flows through the agent."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from typing import TextIO

from linli.edge.agent import Agent

CLEAR = "\x1b[H\x1b[2J"


def render(agent: Agent, readings_per_s: float, width: int = 100, max_rows: int = 12) -> str:
    """One screen: totals, then a row per device (online, latency, last values)."""
    pollers = agent.pollers
    online = sum(p.health.online for p in pollers)
    errors: Counter[str] = Counter()
    for p in pollers:
        errors.update(p.health.errors)
    stats = agent.writer.stats
    lines = [
        f"linli edge  devices online {online}/{len(pollers)}   readings/s {readings_per_s:,.0f}   "
        f"written {stats.written:,}   buffered {agent.writer.pending:,}   "
        f"dropped {agent.buffer.stats.dropped:,}",
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
        lines.append(f"... and {len(pollers) - max_rows} more devices")
    return "\n".join(lines)


def _summary(last: dict[int | None, dict[str, int | float]]) -> str:
    device = last.get(None, {})
    parts = [f"{k}={v:g}" for k, v in list(device.items())[:4]]
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
        screen = render(agent, rate)
        if tty:
            out.write(CLEAR + screen + "\n")
        else:
            out.write(screen.splitlines()[0] + "\n")
        out.flush()
