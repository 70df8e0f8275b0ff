"""Simulated time: a start instant and a speed-up factor over the wall clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class SimClock:
    """Maps wall time to simulated UTC epoch seconds, `time_scale` times faster."""

    start: float = field(default_factory=time.time)
    time_scale: float = 1.0
    _wall0: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        """Simulated epoch seconds."""
        return self.start + (time.monotonic() - self._wall0) * self.time_scale
