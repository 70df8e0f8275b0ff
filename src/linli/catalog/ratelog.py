"""Logging that a flood cannot turn into a flood of log lines.

A reason from a source (a device, a topic root, an edge) is logged the first time it
happens; after that at most once per `every_s`, with how many more there were since.
Nothing goes silent and nothing is logged per message. The keys are bounded: past
`max_keys` the new ones share one key, so a stream of distinct bad topics costs
constant memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

OTHERS = "(others)"


@dataclass
class _Seen:
    next_s: float
    suppressed: int = 0


class RateLimitedLog:
    """`log(reason, source, message, *args)`: the first now, then one summary per interval."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        every_s: float = 60.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        level: int = logging.WARNING,
    ) -> None:
        self.logger = logger
        self.every_s = every_s
        self.max_keys = max_keys
        self.clock = clock
        self.level = level
        self._seen: dict[tuple[str, str], _Seen] = {}

    def log(self, reason: str, source: str, message: str, *args: object) -> bool:
        """Log `message % args` unless this (reason, source) was logged within the interval.

        True when a line was written.
        """
        key = (reason, source)
        if key not in self._seen and len(self._seen) >= self.max_keys:
            key = (reason, OTHERS)
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = _Seen(now + self.every_s)
            self.logger.log(self.level, message, *args)
            return True
        if now < seen.next_s:
            seen.suppressed += 1
            return False
        more, seen.suppressed, seen.next_s = seen.suppressed, 0, now + self.every_s
        suffix = f" ({more} more like it from {key[1]} in the last {self.every_s:.0f}s)" if more else ""
        self.logger.log(self.level, message + suffix, *args)
        return True
