"""Deliveries held in the state until they are delivered or recorded as failed.

A keeper notice, an incident or a booking message is held in the state under this service's
lease before it is sent: if the service dies first, another on the same state sends it once
the lease runs out (`send_orphans`). A delivery given up is recorded (`GET /failed-deliveries`),
and kept here while the state cannot be reached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import DBAPIError

from linli.catalog.channels import Channel
from linli.cloud.leases import OwnHolds
from linli.cloud.notifier.channels import Message, Sender
from linli.cloud.notifier.delivery import Deliveries
from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.state import Hold, WasteState

log = logging.getLogger(__name__)

CHANNEL: TypeAdapter[Channel] = TypeAdapter(Channel)
# A step the state refused, and what it was for; True when the state cannot be reached.
StateError = Callable[[Exception, str], bool]


@dataclass(frozen=True)
class Resent:
    """A held message sent by another service than the one that made it, as it was made."""

    subject: str
    body_text: str
    body: dict[str, Any]

    def text(self) -> str:
        return self.body_text

    def to_json(self) -> dict[str, Any]:
        return self.body


class HeldDeliveries:
    """Sends in the background what is held in the state; `wall` is this machine's clock (the
    leases) and `now_ms` the service's (when a failure is recorded)."""

    def __init__(
        self,
        config: WasteConfig,
        state: WasteState,
        sender: Sender,
        *,
        state_error: StateError,
        wall: Callable[[], float],
        now_ms: Callable[[], int],
    ) -> None:
        self.config = config
        self.state = state
        self.state_error = state_error
        self.wall = wall
        self.now_ms = now_ms
        self.deliveries = Deliveries(sender, config.attempts, self._failed, config.delivery)
        # Held deliveries under way here, or delivered with their release refused: past their
        # lease they are this service's still, not a dead one's orphans (`send_orphans`).
        self._own = OwnHolds(state.release, lambda exc: state_error(exc, "releasing a delivery"), state.renew)
        self.unrecorded: list[tuple[int, str, str, str, str]] = []  # failed deliveries, not kept yet

    def deliver(self, who: str, channel: Channel, message: Message, thread: str) -> None:
        """Send in the background, kept in the state until delivered or recorded as failed: if
        this service dies first, another sends it when the lease runs out (`send_orphans`)."""
        try:
            held: int | None = self.state.hold(*self.holding(who, channel, message, thread))
        except DBAPIError as exc:
            # Sent all the same, only not kept for another service.
            self.state_error(exc, "holding a delivery")
            held = None
        self.start(who, channel, message, thread, held)

    def holding(self, who: str, channel: Channel, message: Message, thread: str) -> Hold:
        """The state's row that holds a delivery (`WasteState.hold`, `claim_and_hold`), its
        lease from now."""
        body = json.dumps({"subject": message.subject, "text": message.text(), "json": message.to_json()})
        return who, channel.model_dump_json(), body, thread, self.wall() + self.config.lease_s

    def start(self, who: str, channel: Channel, message: Message, thread: str, held: int | None) -> None:
        """Deliver in the background; the `held` row (None: not held) goes once it is delivered
        or recorded as failed."""
        if held is None:
            self.deliveries.start(who, channel, message, thread=thread)
            return
        self.deliveries.start(who, channel, message, thread=thread, finished=self._own.sending(held))

    def send_orphans(self) -> int:
        """Send what another service (or this one, before a restart) held and never finished; how
        many. One still under way here (a backlog longer than the lease) only has its lease taken
        again: sent again, its recipient would hear it twice. One delivered here whose release
        failed is released first, not sent again; one still being sent has its lease renewed."""
        self._own.release_again()
        now = self.wall()
        self._own.renew(now + self.config.lease_s)
        orphans = self._own.others(self.state.orphans(now, now + self.config.lease_s))
        for held, who, channel_json, body, thread in orphans:
            try:
                channel = CHANNEL.validate_json(channel_json)
                data = json.loads(body)
                message = Resent(str(data["subject"]), str(data["text"]), dict(data["json"]))
            except (ValidationError, ValueError, KeyError, TypeError) as exc:
                log.error("waste: a held delivery %d to %s cannot be read, dropped: %s", held, who, exc)
                self.state.release(held)  # cannot be sent, now or later: logged, not retried forever
                continue
            log.warning("waste: sending to %s what a service held and never sent: %s", who, message.subject)
            self.start(who, channel, message, thread, held)
        return len(orphans)

    def _failed(self, who: str, channel: Channel, message: Any, error: str) -> None:
        """A delivery given up: recorded in the state (`GET /failed-deliveries`), kept here
        while the state cannot be reached."""
        self.unrecorded.append((self.now_ms(), who, str(channel.kind), json.dumps(message.to_json()), error))
        self.record_failures()

    def record_failures(self) -> None:
        while self.unrecorded:
            try:
                self.state.failed(*self.unrecorded[0])
            except DBAPIError as exc:
                if self.state_error(exc, "recording a failed delivery"):
                    return
                log.error("waste: a failed delivery not kept: %s", self.unrecorded[0])
            del self.unrecorded[0]
