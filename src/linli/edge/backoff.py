"""Exponential backoff with jitter, so that many devices or agents do not retry in step."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays that double from `initial` to `maximum`, each drawn in [delay/2, delay]."""

    initial: float = 0.5
    maximum: float = 30.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one failure."""
        delay = min(self.maximum, self.initial * (2.0**self.attempts))
        self.attempts += 1
        # "Equal jitter": never less than half, so a dead peer is not hammered.
        return delay / 2 + self.rng.uniform(0, delay / 2)

    def reset(self) -> None:
        """After a success, start again from `initial`."""
        self.attempts = 0
