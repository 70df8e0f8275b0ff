"""One simulated clock shared by every process of the demo, through the environment.

`linli demo --time-scale N` runs a day N times faster. Every part must agree on the time: the
devices stamp their messages with it, the edge refuses device times ahead of its own, the waste
service refuses truck times ahead of its machine's, the notices show it and the bookings are
checked against it. The demo sets LINLI_SIM_CLOCK for its child processes; `linli` installs it
before running any command, so `time.time()` there reads the simulated clock. Monotonic time
(timeouts, poll intervals, sleeps) stays real: only what the clock says moves faster.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

ENV = "LINLI_SIM_CLOCK"

_real_time = time.time


@dataclass(frozen=True)
class SharedClock:
    """Simulated epoch seconds: `start` at the real epoch second `real0`, `scale` times faster."""

    start: float
    real0: float
    scale: float

    def now(self) -> float:
        return self.start + (_real_time() - self.real0) * self.scale

    def encode(self) -> str:
        return f"{self.start!r},{self.real0!r},{self.scale!r}"

    @classmethod
    def decode(cls, text: str) -> SharedClock:
        start, real0, scale = (float(part) for part in text.split(","))
        return cls(start, real0, scale)

    @classmethod
    def starting_now(cls, scale: float) -> SharedClock:
        """A clock that says now, now, and runs `scale` times faster from here."""
        now = _real_time()
        return cls(now, now, scale)


_installed: SharedClock | None = None


def install(clock: SharedClock) -> None:
    """From now on this process's `time.time()` reads `clock`, and its children inherit it."""
    global _installed  # noqa: PLW0603 (one clock per process, as time.time is)
    _installed = clock
    os.environ[ENV] = clock.encode()
    time.time = clock.now
    time.time_ns = lambda: int(clock.now() * 1e9)


def install_from_env() -> SharedClock | None:
    """The clock LINLI_SIM_CLOCK names, installed; None when it is not set."""
    text = os.environ.get(ENV)
    if not text:
        return None
    clock = SharedClock.decode(text)
    install(clock)
    return clock


def installed() -> SharedClock | None:
    """The shared clock of this process, if there is one."""
    return _installed
