"""Deliveries under way: each message to each channel tried with backoff, and what keeps
failing handed to `failed` (kept for an operator), also when the service stops mid-retry.

Each destination has its own limit of sends at once and its own circuit breaker
(`destinations`), so a slow, hanging or dead receiver holds up only its own deliveries.
A channel of several robots sends each message through the one free soonest; a message given
a `fallback` (a life-safety alert's) goes there when every robot of its channel is throttled,
paused or at its limit, rather than wait for one, and once its channel failed an attempt. An
`urgent` message (a life-safety alert's) goes first in its robot's queue and at once to its
destination, past the sends under way and a pause (`destinations`)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Callable, Sequence

from linli.catalog.channels import Channel
from linli.cloud.notifier.channels import DeliveryError, Message, Sender, ThrottledError
from linli.cloud.notifier.config import DEFAULT_DELIVERY, DeliveryConfig
from linli.cloud.notifier.destinations import Destinations
from linli.cloud.notifier.pacing import Paces, robots_of, urgency_of

log = logging.getLogger(__name__)

# A life-safety alert's place in a robot's queue: before any other (`urgency_of`).
URGENT = -1
# who it was for, the channel, the message, the last error
Failed = Callable[[str, Channel, Message, str], None]


class Deliveries:
    """Sends in the background; `drain` waits for them when the service stops."""

    def __init__(
        self, sender: Sender, attempts: int, failed: Failed, policy: DeliveryConfig = DEFAULT_DELIVERY
    ) -> None:
        self.sender = sender
        self.attempts = attempts
        self.failed = failed
        self._tasks: set[asyncio.Task[None]] = set()
        # The last delivery of each thread (an alert, a stop's visit) to each destination: the
        # next one waits for it, so a subscriber hears "firing" before "resolved", and a keeper
        # "arrived" before "collected"; other threads go in parallel.
        self._last: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        # No limit shared by all destinations: one that hangs would take every slot of it.
        self.destinations = Destinations(policy)
        # Each robot and the SMTP relay at its documented pace, the most urgent message first.
        self.paces = Paces(policy.pace)
        self.gave_up: Counter[str] = Counter()  # deliveries recorded as failed, by channel kind

    def _give_up(self, who: str, channel: Channel, message: Message, error: str) -> None:
        self.gave_up[str(channel.kind)] += 1
        self.failed(who, channel, message, error)

    @property
    def under_way(self) -> int:
        """Deliveries not finished (retries included)."""
        return len(self._tasks)

    def start(
        self,
        who: str,
        channel: Channel,
        message: Message,
        thread: str = "",
        finished: Callable[[], None] | None = None,
        *,
        fallback: Sequence[Channel] = (),
        urgent: bool = False,
    ) -> None:
        """Deliver in the background, after the thread's earlier messages to the same place;
        `finished` is called once it is delivered, recorded as failed, or given up at a stop.
        With `fallback`, it goes there when the channel's robots are all held up or failed.
        `urgent`: a life-safety alert, ahead of everything else to the same robot or host."""
        key = (who, channel.model_dump_json(), thread)
        before = self._last.get(key)
        deliver = self._deliver(who, channel, message, before, list(fallback), urgent=urgent)
        task = asyncio.get_running_loop().create_task(deliver)
        self._tasks.add(task)
        self._last[key] = task

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if self._last.get(key) is t:
                del self._last[key]
            if finished is not None:
                finished()

        task.add_done_callback(done)

    def free_at(self, channel: Channel) -> float:
        """When a send to `channel` may go: its robot's limit, a throttle or a pause over."""
        pace = self.paces.of(channel)
        paused = self.destinations.of(channel).paused_until
        return max(pace.next_free() if pace is not None else 0.0, paused or 0.0)

    def route(self, channel: Channel, fallback: list[Channel], failed: bool = False) -> Channel:
        """Where one attempt goes: the channel's robot free soonest (the fewest waiting, the
        least used); if even that one is held up and there is a fallback, the first free soonest;
        once the channel `failed` an attempt, the fallback free soonest."""
        if fallback and failed:
            return min(fallback, key=self.free_at)

        def load(robot: Channel) -> tuple[float, int, float]:
            pace = self.paces.of(robot)
            if pace is None:
                return (self.free_at(robot), 0, 0.0)
            return (self.free_at(robot), pace.waiting, pace.sent[-1] if pace.sent else float("-inf"))

        best = min(robots_of(channel), key=load)
        if fallback and self.free_at(best) > self.paces.clock():
            return min([best, *fallback], key=self.free_at)
        return best

    async def _deliver(
        self,
        who: str,
        channel: Channel,
        message: Message,
        before: asyncio.Task[None] | None,
        fallback: list[Channel],
        *,
        urgent: bool = False,
    ) -> None:
        if before is not None:
            # In order per destination; a cancelled or failed one before does not hold this up.
            try:
                await asyncio.gather(before, return_exceptions=True)
            except asyncio.CancelledError:
                self._give_up(who, channel, message, "the service stopped before it was its turn")
                raise
        delay = 1.0
        error = "not tried"
        attempt = 0
        urgency = URGENT if urgent else urgency_of(message)
        while attempt < self.attempts:
            # Chosen again at each attempt: a robot that answered "throttled" is passed over, and
            # a channel that keeps failing gives way to the fallback.
            to = self.route(channel, fallback, failed=attempt > 0)
            pace = self.paces.of(to)
            try:
                if pace is not None:
                    await pace.turn(urgency)
                # Urgent past a destination's pause at its first attempt; once it failed there,
                # its retries wait for the pause as the others' do (or go to the fallback).
                first = urgent and attempt == 0
                await self.destinations.of(to).send(functools.partial(self.sender.send, to, message), first)
                return
            except asyncio.CancelledError:
                # Stopped mid-retry: kept with the failures, for an operator to see and resend.
                self._give_up(
                    who, channel, message, f"the service stopped while retrying; last error: {error}"
                )
                raise
            except ThrottledError as exc:
                # Not a failed attempt: the robot takes it once its penalty is over.
                error = str(exc)
                if pace is not None:
                    pace.pause(exc.retry_after_s)
                    log.warning("%s is throttling; it rests %g s: %s", pace.label, exc.retry_after_s, error)
                    continue
                attempt += 1
            except DeliveryError as exc:
                error = str(exc)
                attempt += 1
                if attempt == self.attempts:
                    break
                log.warning("delivery to %s (%s) failed, attempt %d: %s", who, channel.kind, attempt, error)
                if fallback and to not in fallback:
                    continue  # the next attempt goes to the fallback, not held up by a back-off
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    self._give_up(
                        who, channel, message, f"the service stopped while retrying; last error: {error}"
                    )
                    raise
                delay = min(delay * 2, 60.0)
            except Exception as exc:
                # A message that cannot even be put together (a bug, a field no format takes):
                # trying again would fail the same way, so it is recorded now, never dropped.
                error = f"could not be sent: {type(exc).__name__}: {exc}"
                attempt += 1
                break
        log.error("delivery to %s (%s) failed, attempt %d; recorded: %s", who, channel.kind, attempt, error)
        self._give_up(who, channel, message, error)

    async def drain(self, deadline_s: float = 5.0) -> None:
        """Wait for every delivery under way, for at most `deadline_s`; the rest are cancelled,
        which hands them to `failed`: nothing is lost."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while self._tasks and loop.time() < end:
            await asyncio.wait(list(self._tasks), timeout=max(0.0, end - loop.time()))
        late = list(self._tasks)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
