"""Steps the waste service's state refused: an outage waits and is tried again, a bug is logged."""

from __future__ import annotations

import logging

from linli.catalog.ratelog import RateLimitedLog
from linli.cloud.db import unreachable

log = logging.getLogger(__name__)


class StateFaults:
    """Counts and logs what the state refused (`state_errors`, `state_bugs` in `GET /stats`)."""

    def __init__(self) -> None:
        self.state_errors = 0  # claims that could not reach the state (tried again)
        self.state_bugs = 0  # steps the state refused for a bug (a constraint violated): logged
        self._ratelog = RateLimitedLog(log)
        self._buglog = RateLimitedLog(log, level=logging.ERROR)

    def __call__(self, exc: Exception, what: str) -> bool:
        """A step the state refused; True when it cannot be reached (down, restarting, a
        connection dropped): an outage, what the step was for waits and is tried again. False
        for a bug (a constraint violated, a statement refused), which trying again does not mend:
        logged at ERROR with `what` it was, and counted in `state_bugs`."""
        if unreachable(exc):
            self.state_errors += 1
            self._ratelog.log(
                "state",
                "state",
                "waste: the state cannot be reached, notices wait: %s",
                str(exc).splitlines()[0],
            )
            return True
        self.state_bugs += 1
        self._buglog.log(what, "state", "waste: %s failed, a bug to report: %r", what, exc)
        return False
