"""One place deliveries go (a webhook's host and port, the SMTP relay, the broker): its own limit
of sends at once, and a circuit breaker that pauses it while it keeps failing.

Closed, sends go through, at most `per_destination` at once, the rest waiting their turn in
order. After `pause_after` failures in a row it opens, and at once when a send times out (a
hanging or trickling endpoint: each further send would hold a connection as long, and most
would be sent again): nothing is sent for the pause; then it is half-open and one delivery
probes it while the others wait for the answer. A success closes it; a failure opens it again
for twice as long (ten minutes at most), and each delivery that was waiting counts that as one
failed attempt of its own, so that a destination that stays dead has its deliveries recorded
as failed after their attempts, not kept for ever.

A life-safety alert's first attempt (`urgent`) waits for neither: it goes at once, beside the
sends under way and through a pause, on a connection kept for it (`Sender` pools one more than
the limit), so that it never waits behind a hanging endpoint's timeouts. Its failure counts as
any other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from linli.catalog.channels import Channel, EmailChannel, HttpChannel
from linli.cloud.notifier.channels import DeadlineError, DeliveryError, ThrottledError
from linli.cloud.notifier.config import DeliveryConfig

MAX_PAUSE_S = 600.0


def destination_of(channel: Channel) -> str:
    """The destination a channel's deliveries share: an HTTP URL's scheme, host and port, or the
    SMTP relay, or the broker."""
    if isinstance(channel, HttpChannel):
        url = urllib.parse.urlsplit(channel.url)
        return f"{url.scheme}://{url.netloc.rsplit('@', 1)[-1].lower()}"
    return "smtp" if isinstance(channel, EmailChannel) else "mqtt"


@dataclass(frozen=True)
class Paused:
    """A destination paused now: since when, until when, why, and the deliveries waiting."""

    destination: str
    failures: int
    until_s: float  # on the service's monotonic clock: seconds from now is until_s - now
    last_error: str
    waiting: int


class Destination:
    """Sends to one destination: its limit of sends at once, and its circuit breaker."""

    def __init__(
        self, name: str, policy: DeliveryConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.policy = policy
        self.clock = clock
        self.slots = asyncio.Semaphore(policy.per_destination)
        self.failures = 0  # in a row
        self.last_error = ""
        self.pause_s = policy.pause_s
        self.paused_until: float | None = None
        self.probing = False
        self.waiting = 0  # deliveries waiting for a slot or for the pause to end
        self._changed = asyncio.Condition()

    def paused(self) -> Paused | None:
        if self.paused_until is None:
            return None
        return Paused(self.name, self.failures, self.paused_until, self.last_error, self.waiting)

    async def send(self, call: Callable[[], Awaitable[None]], urgent: bool = False) -> None:
        """Send once through this destination; DeliveryError when it failed or is paused. An
        `urgent` send takes no slot and does not wait for a pause."""
        if urgent:
            await self._attempt(call, False, lambda: None)
            return
        self.waiting += 1
        probe = False
        try:
            probe = await self._admit()
            await self.slots.acquire()
        except BaseException:
            if probe:  # cancelled before it could probe: another delivery will
                await self._settle(probing=False)
            raise
        finally:
            self.waiting -= 1
        await self._attempt(call, probe, self.slots.release)

    async def _attempt(
        self, call: Callable[[], Awaitable[None]], probe: bool, release: Callable[[], None]
    ) -> None:
        """Send once and count its answer; `release` frees what the send held, before the count."""
        try:
            await call()
        except ThrottledError:
            # The host answered: only one robot of it is resting (its pace waits), not the host.
            release()
            await self._succeeded()
            raise
        except DeliveryError as exc:
            release()
            await self._failed(str(exc), probe, timed_out=isinstance(exc, DeadlineError))
            raise
        except BaseException:
            release()
            if probe:
                await self._settle(probing=False)
            raise
        release()
        await self._succeeded()

    async def _admit(self) -> bool:
        """Wait while paused; True when this delivery is the half-open probe."""
        async with self._changed:
            while self.paused_until is not None:
                left = self.paused_until - self.clock()
                if left > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), left)
                    continue
                if not self.probing:
                    self.probing = True
                    return True
                opened = self.paused_until
                await self._changed.wait()
                if self.paused_until is not None and self.paused_until != opened:
                    raise DeliveryError(self._why())
            return False

    def _why(self) -> str:
        return f"{self.name} paused after {self.failures} failures in a row; last error: {self.last_error}"

    async def _failed(self, error: str, probe: bool, timed_out: bool = False) -> None:
        self.failures += 1
        self.last_error = error
        if probe:
            self.pause_s = min(self.pause_s * 2, max(MAX_PAUSE_S, self.policy.pause_s))
        tripped = timed_out or self.failures >= self.policy.pause_after
        if probe or (self.paused_until is None and tripped):
            self.paused_until = self.clock() + self.pause_s
            await self._settle(probing=False)

    async def _succeeded(self) -> None:
        self.failures = 0
        self.pause_s = self.policy.pause_s
        if self.paused_until is not None or self.probing:
            self.paused_until = None
            await self._settle(probing=False)

    async def _settle(self, probing: bool) -> None:
        async with self._changed:
            self.probing = probing
            self._changed.notify_all()


@dataclass
class Destinations:
    """Every destination seen, by name."""

    policy: DeliveryConfig
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.known: dict[str, Destination] = {}

    def of(self, channel: Channel) -> Destination:
        name = destination_of(channel)
        found = self.known.get(name)
        if found is None:
            found = self.known[name] = Destination(name, self.policy, self.clock)
        return found

    def paused(self) -> list[Paused]:
        return [p for d in self.known.values() if (p := d.paused()) is not None]

    def waiting(self) -> dict[str, int]:
        return {name: d.waiting for name, d in self.known.items() if d.waiting}
