"""Each truck's clock, and how far one truck's message may move the service's clock.

The service runs on the trucks' time (a day simulated fast runs as a real one), so one truck
whose clock is wrong, or which lies, must not move every trip on. Each truck's newest time is
kept; a message is refused (`bad_time`) when it is more than `max_skew_s` ahead of

- this machine's clock (in operation the trucks' time is the wall clock's), or
- while another truck's trip is under way (its keepers are what a wrong clock would hurt),
  the service's clock estimate: the newest message's time, carried forward at real time by
  this machine's monotonic clock since it came. In real time that is the wall clock; in a
  compressed simulation it is the trucks' newest time, kept by the truck under way, which
  reports every 10 to 30 s. With no other trip under way a truck may come back from any
  silence (the first report of the day, a replay with nobody reporting between trips),
  bounded by this machine's clock alone.

A message an hour or more behind the newest one is refused too (a clock gone back).
"""

from __future__ import annotations

import time
from collections.abc import Callable

BEHIND_S = 3600.0


class TruckClocks:
    """The trucks' times as their accepted messages gave them."""

    def __init__(
        self,
        max_skew_s: float,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_skew_s = max_skew_s
        self.of: dict[str, float] = {}  # truck -> its newest accepted message's time
        self.newest_s = 0.0
        self._wall = wall
        self._monotonic = monotonic
        self._newest_at = 0.0  # this machine's monotonic clock when newest_s came

    def estimate(self) -> float:
        """The service's clock: the newest message's time, moved on at real time since it came."""
        if not self.newest_s:
            return 0.0
        return self.newest_s + (self._monotonic() - self._newest_at)

    def refusal(self, truck: str, t: float, *, others_under_way: bool) -> str | None:
        """Why a message of `truck` from time `t` is refused, or None when it is taken."""
        skew = self.max_skew_s
        ahead = t - self._wall()
        if ahead > skew:
            return f"{ahead:.0f} s ahead of this machine's clock (max_skew_s = {skew:.0f})"
        if self.newest_s and t < self.newest_s - BEHIND_S:
            return f"an hour or more behind the newest message ({t - self.newest_s:.0f} s)"
        ahead = t - self.estimate()
        if others_under_way and self.newest_s and ahead > skew:
            return (
                f"{ahead:.0f} s ahead of the service's clock while another truck's trip is under way "
                f"(max_skew_s = {skew:.0f})"
            )
        return None

    def heard(self, truck: str, t: float) -> None:
        """An accepted message of `truck` from time `t`."""
        self.of[truck] = max(self.of.get(truck, t), t)
        if t > self.newest_s:
            self.newest_s = t
            self._newest_at = self._monotonic()
