"""The notifier's sending side: what a claim keeps in the outbox, sent on each of a
subscription's channels (a life-safety alert with its fallback), released once delivered or
recorded as failed (again later if the state refused), and sent by another notifier if its
sender died first, never again by its own sender (`linli.cloud.leases`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping

from pydantic import TypeAdapter, ValidationError

from linli.catalog.alerts import AlertMessage
from linli.catalog.alerttext import NoticeKind
from linli.catalog.channels import Channel
from linli.cloud.leases import OwnHolds
from linli.cloud.notifier.channels import GroupNotice, Message, Notice, message_from_json, thread_of
from linli.cloud.notifier.config import NotifierConfig, Subscription, life_safety
from linli.cloud.notifier.delivery import Deliveries
from linli.cloud.notifier.store import Keep, Store

log = logging.getLogger(__name__)

CHANNEL: TypeAdapter[Channel] = TypeAdapter(Channel)
# A notice to send: to whom, on which channel, what.
Outgoing = tuple[str, Channel, Notice | GroupNotice]


class Outbox:
    """Sending what the notifier's claims kept; mixed into `Notifier`, which owns the state."""

    config: NotifierConfig
    store: Store
    clock: Callable[[], float]
    deliveries: Deliveries
    sent: list[tuple[str, str, Notice | GroupNotice]]  # (subscription, channel kind, notice): the log
    count_failure: Callable[[str, str, BaseException], None]
    # Outbox entries under way here, or delivered with their release refused: past their lease
    # they are this notifier's still, not a dead one's orphans (`send_orphans`).
    own: OwnHolds

    @property
    def delivering(self) -> int:
        """Deliveries under way (retries included)."""
        return self.deliveries.under_way

    def _outgoing(self, subs: list[Subscription], kind: NoticeKind, alert: AlertMessage) -> list[Outgoing]:
        """The notices telling each of `subs` on each of its channels, in its locale and zone."""
        return [
            (sub.id, channel, Notice(kind, alert, sub.id, sub.locale or self.config.locale, sub.zone))
            for sub in subs
            for channel in sub.channels
        ]

    def _keep(self, outgoing: list[Outgoing]) -> Keep:
        """What a claim keeps in the outbox until it is sent: if this notifier dies first,
        another sends it; if the database fails, the claim is undone with it."""
        notices = [(sub, ch.model_dump_json(), json.dumps(n.to_json())) for sub, ch, n in outgoing]
        return Keep(notices, self.clock() + self.config.lease_s)

    def _send_all(
        self,
        outgoing: list[Outgoing],
        held: list[int] | None,
        thread: str | None = None,
        subs: Mapping[str, Subscription] | None = None,
    ) -> None:
        """Send what a claim kept (`held`: its outbox ids), if the claim was won."""
        if held is None:
            return  # another notifier won it, or the alert is closed
        for (sub_id, channel, notice), held_id in zip(outgoing, held, strict=True):
            self._send(sub_id, channel, notice, held_id, thread, sub=(subs or {}).get(sub_id))

    def _send(
        self,
        sub_id: str,
        channel: Channel,
        notice: Notice | GroupNotice,
        held: int,
        thread: str | None = None,
        *,
        sub: Subscription | None = None,
    ) -> None:
        """Deliver one notice; a life-safety alert urgently, with its subscription's `fallback`
        for when its robots are held up or keep failing."""
        self.sent.append((sub_id, str(channel.kind), notice))
        finished = self.own.sending(held)
        thread = thread or thread_of(notice)
        urgent = notice.kind in ("firing", "escalation") and life_safety(self.config, notice.alert.rule)
        fallback = sub.fallback if sub is not None and urgent else []
        self.deliveries.start(
            sub_id, channel, notice, thread=thread, finished=finished, fallback=fallback, urgent=urgent
        )

    def _release_refused(self, exc: Exception) -> None:
        """Left in the outbox, released again by `send_orphans`, never sent again from here."""
        self.count_failure("outbox", "(release)", exc)

    def send_orphans(self) -> int:
        """Send the notices a notifier claimed and never sent (it died), as it would have (a
        life-safety alert with its subscription's fallback); how many. What this notifier
        delivered and could not release is released first, not sent again; what it is still
        sending has its lease renewed, so that another notifier does not take it."""
        self.own.release_again()
        now = self.clock()
        self.own.renew(now + self.config.lease_s)
        orphans = self.own.others(self.store.orphans(now, now + self.config.lease_s))
        subs = {s.id: s for s in self.store.subscriptions()} if orphans else {}
        for held, sub_id, channel_json, body in orphans:
            try:
                channel = CHANNEL.validate_json(channel_json)
                notice = message_from_json(json.loads(body) | {"subscription": sub_id})
            except (ValidationError, ValueError, KeyError) as exc:
                self.count_failure("outbox", str(held), exc)
                self.store.release(held)  # cannot be sent, now or later: logged, not retried forever
                continue
            log.warning(
                "notifier: sending a notice for %s that another notifier claimed and never sent", sub_id
            )
            self._send(sub_id, channel, notice, held, sub=subs.get(sub_id))
        return len(orphans)

    def _record(self, who: str, channel: Channel, notice: Message, error: str) -> None:
        self.store.record_failure(int(self.clock() * 1000), who, str(channel.kind), notice.to_json(), error)

    async def drain(self, deadline_s: float = 5.0) -> None:
        """Wait for every delivery under way, for at most `deadline_s`; the rest are recorded
        as failed deliveries (GET /failed-deliveries), not lost. Then release what the database
        refused to before: a notifier stopping leaves another nothing to send again, unless
        the database still refuses."""
        await self.deliveries.drain(deadline_s)
        try:
            self.own.release_again()
        except Exception as exc:
            self._release_refused(exc)
