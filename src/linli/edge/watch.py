"""`linli edge watch`: devices decoded live, full screen, for a technician on site.

Each poll redraws one table per device: every field with its unit and valid range, the value
changed since the last poll highlighted, a value out of its range shown in red with why, and
the alert rules' state on the field. A device's channels (a charger's ports) are a grid, a row
per channel; what does not fit the terminal's height is announced on the last row. `r` shows
the raw registers of each read, `q` quits. Rendering is Rich's; the keys come from the
terminal in cbreak mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import time
import tty
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from linli.catalog.profile import ModbusPoint
from linli.catalog.registers import DecodeError, Value
from linli.edge.modbus import DevicePoller, PollError
from linli.edge.rules import RuleEngine, State

Key = tuple[int | None, str]  # channel, field


@dataclass
class Watched:
    """One device on screen, and what its last polls said."""

    poller: DevicePoller
    values: dict[Key, Value] = field(default_factory=dict)
    changed: set[Key] = field(default_factory=set)
    bad: dict[Key, str] = field(default_factory=dict)  # out of range or not a number: why
    raw: list[tuple[str, list[int]]] = field(default_factory=list)
    error: str = ""
    latency_ms: float = 0.0
    polls: int = 0

    @property
    def name(self) -> str:
        return f"{self.poller.site}/{self.poller.device.id}"


class Watch:
    """Poll the devices in turn and keep what the screen shows."""

    def __init__(self, devices: Sequence[DevicePoller], engine: RuleEngine) -> None:
        self.devices = [Watched(p) for p in devices]
        self.engine = engine
        self.show_raw = False
        self.points: dict[str, dict[Key, ModbusPoint]] = {
            w.name: {(ch, p.field): p for ch, p in w.poller.profile.modbus_points(w.poller.device.count)}
            for w in self.devices
        }

    async def poll(self, w: Watched) -> None:
        p = w.poller
        started = time.perf_counter()
        try:
            blocks = await p.poll()
        except PollError as exc:
            w.error = f"{exc.reason}: {exc}"
            return
        w.latency_ms = (time.perf_counter() - started) * 1000
        w.error, w.polls = "", w.polls + 1
        w.raw = [
            (f"{r.table} {r.address}+{r.count}", block) for r, block in zip(p.polled, blocks, strict=True)
        ]
        w.bad = {}
        for read, block in zip(p.polled, blocks, strict=True):
            for slot, value in zip(read.slots, read.decode(block), strict=True):
                if isinstance(value, DecodeError):
                    w.bad[slot.channel, slot.decoder.field] = str(value)
        now_ms = int(time.time() * 1000)
        p.decode(blocks, now_ms)
        values = {(ch, k): v for ch, fields in p.last.items() for k, v in fields.items()}
        w.changed = {k for k, v in values.items() if k in w.values and w.values[k] != v}
        w.values = values
        tags = {"site": p.site, "device": p.device.id}
        for channel, fields in p.last.items():
            port = None if channel is None else str(channel)
            self.engine.observe(p.profile.kind, tags, fields, now_ms, port)

    def render(self, console: Console | None = None) -> RenderableType:
        """The screen; given the console, what does not fit its height is said, not cut silently."""
        head = Text(f"linli edge watch  {time.strftime('%H:%M:%S')}   r raw registers   q quit", style="bold")
        parts: list[RenderableType] = [head]
        for w in self.devices:
            parts.extend(self._device(w))
        if console is None:
            return Group(*parts)
        shown: list[RenderableType] = []
        used = 0
        for i, part in enumerate(parts):
            height = len(console.render_lines(part, console.options, pad=False))
            if used + height > console.height - 1:  # the last row says what is below
                left = sum(len(console.render_lines(p, console.options, pad=False)) for p in parts[i:])
                shown.append(
                    Text(f"v {left} more rows below: make the window taller", style="bold black on yellow")
                )
                break
            shown.append(part)
            used += height
        return Group(*shown)

    def _device(self, w: Watched) -> list[RenderableType]:
        """The device's own fields, then one row per channel (a charger's ports), one column a field."""
        p = w.poller
        state = Text("NO ANSWER " + w.error, style="bold red") if w.error else Text("online", style="green")
        title = Text.assemble(
            (w.name, "bold"), f"  {p.profile.kind}  {p.endpoint.name} unit {p.unit}  ",
            state, f"  {w.latency_ms:.1f} ms  poll {w.polls}",
        )  # fmt: skip
        if self.show_raw:
            raw = Table(title=title, title_justify="left", expand=False)
            raw.add_column("read")
            raw.add_column("registers")
            for name, block in w.raw:
                raw.add_row(name, " ".join(f"{v:04x}" for v in block))
            return [raw]
        rules = self._rule_states(w)
        stored = {key: point for key, point in self.points[w.name].items() if point.store}
        table = Table(title=title, title_justify="left", expand=False)
        for column in ("field", "value", "unit", "valid range", "rule"):
            table.add_column(column)
        for key, point in stored.items():
            if key[0] is None:
                table.add_row(
                    key[1],
                    self._value(w, key, point),
                    point.unit,
                    point.valid_range,
                    rules.get(key, Text("")),
                )
        channels = sorted({ch for ch, _ in stored if ch is not None})
        if not channels:
            return [table]
        # A 10-port charger was 70 rows of (port, field); as a grid it fits a technician's screen.
        fields = {name: point for (ch, name), point in stored.items() if ch == channels[0]}
        grid = Table(expand=False)
        grid.add_column("port", justify="right")
        for name, point in fields.items():
            limits = " ".join(filter(None, (point.unit, point.valid_range)))
            grid.add_column(f"{name}\n{limits}", justify="left" if point.enum else "right", vertical="top")
        grid.add_column("rules")
        for ch in channels:
            said = [rules[key] for key in ((ch, name) for name in fields) if key in rules]
            firing = [r for r in said if "firing" in r.plain or "pending" in r.plain]
            grid.add_row(
                str(ch),
                *(self._value(w, (ch, name), point) for name, point in fields.items()),
                Text(" ").join(firing) if firing else Text("ok" if said else "", style="green"),
            )
        return [table, grid]

    def _value(self, w: Watched, key: Key, point: ModbusPoint) -> Text:
        if key in w.bad:
            return Text(w.bad[key], style="bold red")
        if key not in w.values:
            return Text("-", style="dim")
        value = w.values[key]
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        meaning = (point.enum or {}).get(str(value))
        if meaning:
            shown += f" ({meaning})"
        return Text(shown, style="bold yellow reverse" if key in w.changed else "")

    def _rule_states(self, w: Watched) -> dict[Key, Text]:
        p = w.poller
        out: dict[Key, Text] = {}
        tags = {"site": p.site, "device": p.device.id}
        for rule in self.engine.rules_for(p.profile.kind, tags):
            for channel, name in self.points[w.name]:
                if name != rule.field:
                    continue
                port = None if channel is None else str(channel)
                state = self.engine.state_of(rule.id, p.site, p.device.id, port)
                style = {State.FIRING: "bold white on red", State.PENDING: "bold yellow"}.get(state, "green")
                out[channel, rule.field] = Text(f"{rule.id}: {state}", style=style)
        return out


@contextlib.contextmanager
def keys_unbuffered() -> Iterator[bool]:
    """Single key presses from the terminal; False (nothing changed) when stdin is no terminal."""
    if not sys.stdin.isatty():
        yield False
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def run(watch: Watch, interval_s: float, stop: asyncio.Event, console: Console | None = None) -> None:
    """Poll, redraw, and take keys until `q` or `stop`."""
    console = console or Console()
    loop = asyncio.get_running_loop()
    with (
        keys_unbuffered() as keys,
        Live(watch.render(console), console=console, screen=True, auto_refresh=False) as live,
    ):
        if keys:

            def on_key() -> None:
                key = os.read(sys.stdin.fileno(), 1)
                if key in (b"q", b"Q"):
                    stop.set()
                elif key in (b"r", b"R"):
                    watch.show_raw = not watch.show_raw
                    live.update(watch.render(console), refresh=True)

            loop.add_reader(sys.stdin.fileno(), on_key)
        try:
            while not stop.is_set():
                for w in watch.devices:
                    await watch.poll(w)
                live.update(watch.render(console), refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
        finally:
            if keys:
                loop.remove_reader(sys.stdin.fileno())
            for w in watch.devices:
                w.poller.endpoint.close()
