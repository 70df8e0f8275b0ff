"""Pacing: each group robot and the SMTP relay sent to no faster than its documented limit, the
most urgent message first, and a robot that says it is throttled left alone for as long as it says.

WeCom and DingTalk group robots take 20 messages a minute each; DingTalk then refuses the robot
for 10 minutes (errcode 130101), WeCom answers errcode 45009, Feishu's custom bots code 9499.
A storm (a compound losing mains power: a hundred messages in a minute) would otherwise push a
smoke alarm behind them, or into the robot's ten-minute refusal.

A `Pace` keeps the times of its last sends and lets a send go only when fewer than `limit` went
within the last `window_s` (a sliding window, as the robots count): never more, at any moment.
Sends wait in order of urgency, then of arrival. A throttled answer pauses the pace for the
robot's documented penalty; the message is sent again afterwards, without counting as a failed
attempt: nothing is lost to a robot's limit.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import urllib.parse
from collections import deque
from collections.abc import Callable

from linli.catalog.channels import Channel, ChannelKind, EmailChannel, HttpChannel
from linli.catalog.profile import Severity
from linli.cloud.notifier.config import PaceLimit

# Send margin: a robot counts the window on its own clock, at the request's arrival.
MARGIN_S = 0.5


def urgency_of(message: object) -> int:
    """Which waiting message goes first: an alert firing critical (0), firing warning (1), then
    everything else (2: resolutions, repeats, keepers' notices) in the order they came."""
    alert = getattr(message, "alert", None)
    if alert is None or getattr(message, "kind", None) not in ("firing", "escalation"):
        return 2
    return 0 if alert.severity is Severity.CRITICAL else 1


def robot_of(channel: Channel) -> str | None:
    """What a pace is kept for: a robot's whole URL (its key or access token is its identity),
    the SMTP relay; None for webhooks and MQTT, which have no documented limit."""
    if isinstance(channel, HttpChannel):
        if channel.kind in (ChannelKind.WEBHOOK, ChannelKind.ALERTMANAGER):
            return None
        parts = urllib.parse.urlsplit(channel.url)
        return urllib.parse.urlunsplit(parts._replace(fragment=""))
    return "smtp" if isinstance(channel, EmailChannel) else None


def robots_of(channel: Channel) -> list[Channel]:
    """The robots a channel sends through, in turn: its own URL, then each of its `robots`."""
    if not isinstance(channel, HttpChannel) or not channel.robots:
        return [channel]
    return [channel, *(channel.model_copy(update={"url": url, "robots": []}) for url in channel.robots)]


class Pace:
    """At most `limit.per` sends within any `limit.window_s`, the most urgent waiting first."""

    def __init__(
        self,
        name: str,
        limit: PaceLimit,
        clock: Callable[[], float] = time.monotonic,
        margin_s: float = MARGIN_S,
    ) -> None:
        self.name = name
        # For the log: a robot's URL carries its key, a credential; the query is left out.
        self.label = urllib.parse.urlsplit(name)._replace(query="", fragment="").geturl()
        self.limit = limit
        self.clock = clock
        self.margin_s = margin_s
        self.sent: deque[float] = deque()  # the times of the last `limit.per` sends
        self.paused_until = 0.0
        self.throttled = 0  # throttled answers received
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._wake: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def next_free(self) -> float:
        """The earliest time a send may go, on `clock`."""
        free = self.paused_until
        if len(self.sent) >= self.limit.per:
            free = max(free, self.sent[-self.limit.per] + self.limit.window_s + self.margin_s)
        return free

    async def turn(self, urgency: int) -> None:
        """Wait for a send's turn: lower `urgency` first, then first come."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (urgency, next(self._seq), future))
        self._release()
        try:
            await future
        except asyncio.CancelledError:
            if not future.done() or future.cancelled():
                self._queue = [entry for entry in self._queue if entry[2] is not future]
                heapq.heapify(self._queue)
            else:  # its turn came as it was cancelled: the turn goes to the next
                self.sent.pop()
            self._release()
            raise

    def pause(self, seconds: float) -> None:
        """The robot said it is throttling: nothing goes to it for `seconds`."""
        self.throttled += 1
        self.paused_until = max(self.paused_until, self.clock() + seconds)
        self._release()

    def _release(self) -> None:
        """Give turns to the most urgent waiting while the limit allows; else wake up when it will."""
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        while self._queue:
            if self._queue[0][2].done():  # cancelled while waiting
                heapq.heappop(self._queue)
                continue
            now = self.clock()
            free = self.next_free()
            if free > now:
                loop = asyncio.get_running_loop()
                self._wake = loop.call_later(free - now, self._release)
                return
            _, _, future = heapq.heappop(self._queue)
            self.sent.append(now)
            while len(self.sent) > self.limit.per:
                self.sent.popleft()
            future.set_result(None)


class Paces:
    """A pace per robot and for the SMTP relay, each at its kind's limit."""

    def __init__(self, limits: dict[ChannelKind, PaceLimit], clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self.clock = clock
        self.known: dict[str, Pace] = {}

    def of(self, channel: Channel) -> Pace | None:
        name = robot_of(channel)
        limit = self.limits.get(channel.kind)
        if name is None or limit is None:
            return None
        found = self.known.get(name)
        if found is None:
            found = self.known[name] = Pace(name, limit, self.clock)
        return found
