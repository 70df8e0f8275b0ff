"""Where an alert goes: the subscriptions it concerns, the group it is told in, the alert that
inhibits it, a subscriber's quiet hours; and an edge's last will as an alert like any other."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from linli.catalog.alerts import (
    EDGE_OFFLINE,
    EDGE_ONLINE,
    EDGE_STOPPED,
    AlertMessage,
    AlertState,
    fingerprint,
)
from linli.catalog.profile import Severity
from linli.cloud.notifier.config import InhibitRule, QuietHours, Subscription, labelled

RANK = {Severity.WARNING: 0, Severity.CRITICAL: 1}


@dataclass(frozen=True)
class Active:
    """An open alert as the book has it."""

    alert: AlertMessage
    first_s: float  # when a notifier first saw it fire
    acked_by: str | None
    told: dict[str, float]  # subscription -> when it last heard


def matches(sub: Subscription, alert: AlertMessage) -> bool:
    return (
        (not sub.sites or alert.site in sub.sites)
        and (not sub.kinds or alert.kind in sub.kinds)
        and (not sub.rules or alert.rule in sub.rules)
        and RANK[alert.severity] >= RANK[sub.min_severity]
    )


def group_key(sub: Subscription, alert: AlertMessage) -> str:
    """The group `alert` is told in to `sub`: its `group_by` labels as a query (`site=x&rule=y`),
    which is also what the API's /alerts takes to list the group."""
    return urllib.parse.urlencode([(label, str(getattr(alert, label))) for label in sub.group_by])


def inhibitor(rules: Sequence[InhibitRule], alert: AlertMessage, book: Sequence[Active]) -> str | None:
    """The fingerprint of a firing alert that inhibits `alert` by one of `rules`, or None."""
    for rule in rules:
        if not labelled(alert, rule.target):
            continue
        for other in book:
            source = other.alert
            if (
                source.fingerprint != alert.fingerprint
                and labelled(source, rule.source)
                and all(getattr(source, label) == getattr(alert, label) for label in rule.equal)
            ):
                return source.fingerprint
    return None


def quiet_now(quiet: QuietHours | None, severity: Severity, now_s: float) -> bool:
    if quiet is None or (severity is Severity.CRITICAL and quiet.critical_passes):
        return False
    local = datetime.fromtimestamp(now_s, ZoneInfo(quiet.zone)).strftime("%H:%M")
    if quiet.start <= quiet.end:
        return quiet.start <= local < quiet.end
    return local >= quiet.start or local < quiet.end


def edge_status_alert(edge: str, status: str, now_ms: int) -> AlertMessage | None:
    """An edge's last will ("offline") as an alert like any other.

    "online" resolves it, and so does "stopped": a planned stop (a restart, an upgrade)
    pages nobody, while a lost connection does.
    """
    if status not in (EDGE_ONLINE, EDGE_OFFLINE, EDGE_STOPPED):
        return None
    rule = "edge.offline"
    return AlertMessage(
        fingerprint=fingerprint(rule, "", edge, None),
        rule=rule,
        title="Edge agent offline",
        severity=Severity.CRITICAL,
        state=AlertState.FIRING if status == EDGE_OFFLINE else AlertState.RESOLVED,
        kind="edge",
        site="",
        device=edge,
        port=None,
        value=None,
        threshold=0,
        time_ms=now_ms,
        since_ms=now_ms,
        edge=edge,
    )


def hears_now(sub: Subscription, alert: AlertMessage, now_s: float) -> bool:
    """`sub` is told of `alert` now: the alert concerns it and it is outside its quiet hours."""
    return matches(sub, alert) and not quiet_now(sub.quiet, alert.severity, now_s)
