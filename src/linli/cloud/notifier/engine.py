"""Who hears about an alert, when, and how often.

An alert is its fingerprint. The first firing event starts it; later events of the same
alert only update it (one message for a burst), after `group_wait_s`. Each subscription hears
of alerts by group (`group_by`, by default the site and the rule): one message for the group,
naming how many alerts it covers; a group already told hears of its changes (new alerts,
resolved ones) at most every `group_interval_s`, and the all-clear (its last alert resolved)
at once. A life-safety alert (smoke, a fire alarm) waits for neither. While alerts of a group
fire and nobody acknowledged them, the group is told again every `repeat_s`; an alert not
acknowledged within a subscription's `escalate_after_s` goes to its `escalate_to` as well.
An alert inhibited (`inhibit`: an edge offline, its devices' silence) or held by a silence is
recorded and not told; it is told when its source resolves or the silence ends, if it still fires.
A subscriber in quiet hours hears of it when they end, if it still fires; a critical alert
gets through unless the subscription says otherwise. Time comes from `clock`, so all of
this can be tested without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Callable

from pydantic import ValidationError

from linli.catalog.alerts import AlertMessage, AlertState
from linli.catalog.alerttext import NoticeKind, Standing
from linli.catalog.errors import validation_reason
from linli.catalog.ratelog import RateLimitedLog
from linli.cloud.db import unreachable
from linli.cloud.leases import OwnHolds
from linli.cloud.notifier.channels import GroupNotice, Notice, Sender
from linli.cloud.notifier.config import NotifierConfig, Silence, Subscription, labelled, life_safety
from linli.cloud.notifier.delivery import Deliveries
from linli.cloud.notifier.outbox import Outbox, Outgoing
from linli.cloud.notifier.routing import Active, group_key, hears_now, inhibitor, matches, quiet_now
from linli.cloud.notifier.store import NOTHING, Entry, Keep, Pending, Store

log = logging.getLogger(__name__)
# How often an alert held back by a subscriber's quiet hours is looked at again.
QUIET_RECHECK_S = 60.0
# Which notice an alert alone in its message gets, by how it stands.
SINGLE: dict[Standing, NoticeKind] = {"new": "firing", "firing": "repeat", "resolved": "resolved"}
# Alerts looked at in one go: each may take a few statements, and the loop has other work.
TICK_BATCH = 100
# Wakes are rounded up to this grid: a burst of new alerts wakes the notifier once a step,
# and each alert is told at most this much after its group wait.
WAKE_GRID_S = 0.05
# How often an alert whose step fails for a bug (not the state being unreachable) is tried again.
BUG_RETRY_S = 60.0


class Notifier(Outbox):
    """The alert book and the delivery queue."""

    def __init__(
        self, config: NotifierConfig, store: Store, sender: Sender, clock: Callable[[], float]
    ) -> None:
        self.config = config
        self.store = store
        self.sender = sender
        self.clock = clock
        self.sent = []  # (subscription, channel kind, notice): the log
        self.handled: Counter[str] = Counter()  # events taken, by device kind
        self.rejected: Counter[str] = Counter()  # events refused at the door, by reason
        self.errors: Counter[str] = Counter()  # alerts quarantined or failing, by where
        self.ticks = 0  # ticks begun, failed ones too: a quiet window has proof a tick came
        self.deliveries = Deliveries(sender, config.attempts, self._record, config.delivery)
        self.own = OwnHolds(store.release, self._release_refused, store.renew)
        self._ratelog = RateLimitedLog(log)
        self._buglog = RateLimitedLog(log, level=logging.ERROR)
        self._wakes: set[int] = set()  # the ticks already scheduled, as steps of the grid on the loop's clock
        self._soon: asyncio.AbstractEventLoop | None = None  # the loop a tick is due on right away
        self._book: list[Active] | None = None  # every open alert, read once a tick when a group needs it
        self._told_now: set[tuple[str, str]] = set()  # (subscription, group) told in this tick
        self._silences: list[Silence] | None = None  # the silences, read once a tick

    def reject(self, reason: str, source: str, detail: str) -> None:
        """An event that is not an alert of ours: counted, logged once per reason and source a minute."""
        self.rejected[reason] += 1
        self._ratelog.log(reason, source, "notifier: event from %s refused (%s): %s", source, reason, detail)

    def count_failure(self, where: str, fp: str, exc: BaseException) -> None:
        """A step that failed for one alert (or `(all)`): counted, logged once a minute per alert."""
        self.errors[where] += 1
        self._ratelog.log(where, fp, "notifier: alert %s: %s failed: %r", fp, where, exc)

    def count_bug(self, where: str, fp: str, exc: BaseException) -> None:
        """A step that failed for a bug (a constraint violated, a statement refused, an
        exception of ours), not for the state being unreachable: counted as `bug`, logged at
        ERROR once a minute per alert, and not tried again at every tick."""
        self.errors["bug"] += 1
        self._buglog.log(where, fp, "notifier: alert %s: %s failed, a bug to report: %r", fp, where, exc)

    # --- events -------------------------------------------------------------

    def handle(self, alert: AlertMessage) -> bool:
        """One alert event from an edge; False when the state could not be reached, so that the
        caller keeps the event and hands it over again. Any other failure costs this event, never
        the notifier."""
        try:
            self._handle(alert)
        except Exception as exc:
            if unreachable(exc):
                # The database is down, restarting or unreachable: nothing of this event was stored.
                self.count_failure("state", alert.fingerprint, exc)
                return False
            # Handing it over again would fail the same way, for ever: it costs this event.
            self.count_bug("handle", alert.fingerprint, exc)
        self.handled[alert.kind] += 1
        return True

    def _handle(self, alert: AlertMessage) -> None:
        now = self.clock()
        if alert.state is AlertState.FIRING:
            # The same episode again (an update, or the edge announcing it anew) only refreshes
            # it, and one already closed (a late event) changes nothing: no new message.
            wait = self._group_wait(alert)
            opened = self.store.open_alert(
                alert.fingerprint, alert.since_ms, alert.model_dump_json(), now, now + wait
            )
            if opened == "new":
                log.info("alert firing: %s %s/%s", alert.rule, alert.site, alert.device)
                # The first message goes when the group wait ends, not at the next periodic tick.
                self._wake(wait)
        elif alert.state is AlertState.RESOLVED:
            # Closing is the last step that touches the state: a failure before it leaves the
            # alert open for this event to be handed over again, after it nothing can fail. The
            # closing transaction keeps the resolution for the next message of each group that
            # heard of it, due now: the next tick tells it, or says when it may.
            subs = {s.id: s for s in self.store.subscriptions()}
            overdue = self._first_overdue(alert, subs, now)

            def pending(told: list[str]) -> Pending:
                # An overdue alert its group could not be told of yet is told resolved with the
                # group's next message: late, but not lost.
                heard = set(told) | {s.id for s in subs.values() if overdue and matches(s, alert)}
                groups = [(s, group_key(subs[s], alert)) for s in sorted(heard) if s in subs]
                return Pending(groups, alert.model_dump_json())

            if self.store.close_alert(alert.fingerprint, alert.since_ms, now, pending=pending) is not None:
                if any(labelled(alert, rule.source) for rule in self.config.inhibit):
                    # The alerts it inhibited that still fire are told now.
                    self.store.look_again()
                self._wake(0)

    def _first_overdue(self, resolution: AlertMessage, subs: dict[str, Subscription], now: float) -> bool:
        """An alert that outlasted its group wait by its own times, and nobody told of it yet:
        its events came late and together (held while the state was down, or while no notifier
        of the group could take them), its resolution before the tick that would have told it.
        Told to some subscriptions only (the state failed between their claims), the same for
        the others. Its first message goes now, before the resolution, as it would have in
        time, where its group may be told now. A flap shorter than the group wait stays
        untold. True if overdue."""
        if resolution.time_ms - resolution.since_ms < self._group_wait(resolution) * 1000:
            return False
        entry = self.store.entry(resolution.fingerprint)
        if entry is None:
            return False  # not open: closed already
        # Told to some only (the state failed between two subscriptions' claims): the others
        # are told now too, or the closing would keep the resolution for those who heard alone.
        concerned = [s for s in subs.values() if hears_now(s, resolution, now)]
        if entry[4] and all(s.id in entry[4] for s in concerned):
            return False  # told to every subscription it concerns (one in its quiet hours waits)
        self._afresh()  # as a tick does
        for active in self._read([entry]):
            if active.alert.since_ms <= resolution.since_ms:
                self._due(active, subs, now)
        return True

    def active(self) -> list[Active]:
        """Every open alert, oldest first; one that no longer reads back is quarantined."""
        return self._read(self.store.book())

    def _read(self, entries: list[Entry]) -> list[Active]:
        out = []
        for fp, body, first_s, acked_by, told in entries:
            try:
                alert = AlertMessage.model_validate_json(body)
            except ValidationError as exc:
                reason = validation_reason(exc)
                self.errors["quarantined"] += 1
                log.error("notifier: alert %s no longer reads back (%s); quarantined", fp, reason)
                self.store.quarantine_alert(fp, reason)
                continue
            out.append(Active(alert, first_s, acked_by, told))
        return out

    def ack(self, fp: str, by: str) -> str | None:
        """Acknowledge a firing alert: no more repeats or escalation. Who acknowledged, or None."""
        return self.store.ack(fp, by, self.clock())

    def tick(self) -> None:
        """Send what is due now: first messages after the group wait, repeats, escalations.

        Only the alerts due by now are read (`due_s`), at most `TICK_BATCH` at a time, and each
        is given the time it is next due."""
        self.ticks += 1
        now = self.clock()
        self._afresh()
        subs = {s.id: s for s in self.store.subscriptions()}
        due = self.store.book(due_by=now, limit=TICK_BATCH)
        if len(due) == TICK_BATCH:
            self._wake(0)  # more are due (a storm, a restart): the rest right after, the loop free between
        # A life-safety alert first: its messages are claimed (and go) before a storm's.
        for active in sorted(self._read(due), key=lambda a: not life_safety(self.config, a.alert.rule)):
            fp = active.alert.fingerprint
            try:
                wait_until = active.first_s + self._group_wait(active.alert)
                self.store.set_due(fp, wait_until if now < wait_until else self._due(active, subs, now))
            except Exception as exc:
                # One alert that cannot be told must not keep the others from being told.
                if unreachable(exc):
                    self.count_failure("tick", fp, exc)  # still due: the next tick tries again
                else:
                    self.count_bug("tick", fp, exc)
                    self._later(fp, now + BUG_RETRY_S)
        self._tell_changes(subs, now)

    def _tell_changes(self, subs: dict[str, Subscription], now: float) -> None:
        """Tell each group whose resolved alerts wait: once its interval has passed, or at once
        when none of its alerts still fires (the all-clear)."""
        gap = self.config.group_interval_s
        for sub_id, key, changes in self.store.groups_due(now, TICK_BATCH):
            sub = subs.get(sub_id)
            try:
                if sub is None:
                    # Its subscription is gone: nobody to tell.
                    self.store.claim_group(sub_id, key, now, now, members=[], keep=lambda _f, _r: NOTHING)
                    continue
                still = any(matches(sub, a.alert) and group_key(sub, a.alert) == key for a in self._open())
                if not self._tell_group(sub, key, now, now - gap if still else now):
                    self.store.tell_later(sub_id, key, gap, changes)
            except Exception as exc:
                # Still due: the next tick tries again, the other groups told meanwhile.
                if unreachable(exc):
                    self.count_failure("tick", f"{sub_id} {key}", exc)
                else:
                    self.count_bug("tick", f"{sub_id} {key}", exc)

    def _afresh(self) -> None:
        """Forget what was read for the last tick (open alerts, groups told, silences)."""
        self._book, self._told_now, self._silences = None, set(), None

    def _group_wait(self, alert: AlertMessage) -> float:
        """How long a new alert waits for others of its group: a life-safety alert not at all."""
        return 0.0 if life_safety(self.config, alert.rule) else self.config.group_wait_s

    def _inhibited(self, alert: AlertMessage) -> bool:
        """Whether a firing alert inhibits `alert` (the book is read only if a rule targets it)."""
        rules = [rule for rule in self.config.inhibit if labelled(alert, rule.target)]
        return bool(rules) and inhibitor(rules, alert, self._open()) is not None

    def silenced(self, alert: AlertMessage, now: float) -> Silence | None:
        """The silence that holds `alert` now (the latest ending), or None."""
        if self._silences is None:
            self._silences = self.store.silences(now)
        holding = [s for s in self._silences if s.holds(alert, now)]
        return holding[-1] if holding else None

    def _open(self) -> list[Active]:
        """Every open alert, read once a tick (or event) when a group's message needs them."""
        if self._book is None:
            self._book = self.active()
        return self._book

    def _tell_group(self, sub: Subscription, key: str, now: float, ready: float) -> bool:
        """Tell `sub` the group `key` in one message, if it was last told by `ready` (or never)
        and nobody else tells it now: its alerts firing (new ones first) and those resolved
        since. False if another notifier told it, or its interval has not passed."""
        members = [
            a
            for a in self._open()
            if hears_now(sub, a.alert, now)
            and group_key(sub, a.alert) == key
            and not self._inhibited(a.alert)
            and self.silenced(a.alert, now) is None
        ]
        outgoing: list[Outgoing] = []

        def keep(firing: list[str], resolved: list[str]) -> Keep:
            still = [a for a in members if a.alert.fingerprint in firing]
            listed: list[tuple[Standing, AlertMessage]] = [
                *(("new", a.alert) for a in still if sub.id not in a.told),
                *(("firing", a.alert) for a in still if sub.id in a.told),
                *(("resolved", AlertMessage.model_validate_json(body)) for body in resolved),
            ]
            if listed:
                outgoing[:] = [(sub.id, channel, self._message(sub, key, listed)) for channel in sub.channels]
            return self._keep(outgoing)

        fps = [a.alert.fingerprint for a in members]
        claimed = self.store.claim_group(sub.id, key, now, ready, members=fps, keep=keep)
        if claimed is None:
            return False
        self._told_now.add((sub.id, key))
        self._send_all(outgoing, claimed.held, thread=f"group:{key}", subs={sub.id: sub})
        return True

    def _message(
        self, sub: Subscription, key: str, listed: list[tuple[Standing, AlertMessage]]
    ) -> Notice | GroupNotice:
        """The message for a group: an alert alone as its own notice, several as the group's."""
        locale = sub.locale or self.config.locale
        if len(listed) == 1:
            standing, alert = listed[0]
            return Notice(SINGLE[standing], alert, sub.id, locale, sub.zone)
        standings = {standing for standing, _ in listed}
        kind: NoticeKind = (
            "firing" if "new" in standings else "resolved" if "resolved" in standings else "repeat"
        )
        api_url = self.config.api_url or f"http://{self.config.api_host}:{self.config.api_port}"
        return GroupNotice(
            kind, sub.id, key, tuple(listed), api_url, self.config.group_list, locale, sub.zone
        )

    def _later(self, fp: str, due: float) -> None:
        try:
            self.store.set_due(fp, due)
        except Exception as exc:
            self.count_failure("tick", fp, exc)  # still due: the next tick tries again

    def _wake(self, delay: float) -> None:
        """Tick once `delay` seconds have passed. A tick already scheduled for the same step of
        the grid serves: a burst wakes the notifier once, not once an alert. An earlier tick
        never serves, since what it reads is what is due by then; one due right away, not run
        yet, does: the events handled before it are due by then."""
        with contextlib.suppress(RuntimeError):  # no loop: the caller ticks
            loop = asyncio.get_running_loop()
            if delay <= 0:
                # Right after this turn. Events queued behind each other (a burst, a loop that
                # fell behind) share that tick: its reads of the subscriptions, the due alerts
                # and the book, once for all of them.
                if self._soon is not loop:
                    self._soon = loop
                    loop.call_soon(self._woken, None)
                return
            step = math.ceil((loop.time() + delay) / WAKE_GRID_S)
            if step in self._wakes:
                return
            self._wakes.add(step)
            loop.call_at(step * WAKE_GRID_S, self._woken, step)

    def _woken(self, step: int | None) -> None:
        if step is None:
            self._soon = None  # what is handled from now on needs a tick after this one
        else:
            self._wakes.discard(step)
        try:
            self.tick()
        except Exception as exc:
            # The state may be unreadable for a moment: the periodic tick tries again.
            self.count_failure("tick", "(all)", exc)

    def _due(self, active: Active, subs: dict[str, Subscription], now: float) -> float | None:
        """Tell what is due for one alert; when something may next be due, or None."""
        store, repeat_s = self.store, self.config.repeat_s
        alert = active.alert
        if self._inhibited(alert):
            return None  # told (if it still fires) when its source resolves: `look_again`
        silence = self.silenced(alert, now)
        if silence is not None:
            return silence.ends_s  # told then if it still fires (or sooner, if it is expired)
        unacked = active.acked_by is None
        due: list[float] = []
        for sub in subs.values():
            if not matches(sub, alert):
                continue
            if quiet_now(sub.quiet, alert.severity, now):
                due.append(now + QUIET_RECHECK_S)
                continue
            last = active.told.get(sub.id)
            key = group_key(sub, alert)
            if (sub.id, key) in self._told_now:
                last = now  # its group was told in this tick, with it
            elif last is None:
                # A life-safety alert goes at once; another with its group's next message.
                gap = 0.0 if life_safety(self.config, alert.rule) else self.config.group_interval_s
                told = store.group_told(sub.id, key)
                ready = now if told is None else told + gap
                if now < ready or not self._tell_group(sub, key, now, now - gap):
                    due.append(max(ready, now + WAKE_GRID_S))
                    continue
                last = now
            elif unacked and now - last >= repeat_s:
                self._tell_group(sub, key, now, now - repeat_s)
                last = now
            if unacked:
                due.append(last + repeat_s)
            if sub.escalate_after_s is not None and unacked:
                due.extend(self._escalate(active, sub, subs, now))
        return min(due, default=None)

    def _escalate(
        self, active: Active, sub: Subscription, subs: dict[str, Subscription], now: float
    ) -> list[float]:
        """Escalate an unacknowledged alert once its time came; else when it comes."""
        assert sub.escalate_after_s is not None
        escalate_at = active.first_s + sub.escalate_after_s
        if now < escalate_at:
            return [escalate_at]
        targets = [subs[target] for target in sub.escalate_to if target in subs]
        out = self._outgoing(targets, "escalation", active.alert)
        held = self.store.claim_escalation(active.alert.fingerprint, sub.id, self._keep(out))
        self._send_all(out, held, subs={target.id: target for target in targets})
        return []
