"""An alert as a person reads it, from the `alerts` message catalog: its title, where, and when.

The edge sends the rule id and an English title as machine fields; the title a person reads
is the catalog's `alert.rule.<rule id>`, and only a rule the catalog does not know (one a
site's config made up) shows the title its config gave. The site and device are named as
people name them (`site_name`, `device_name`; under `en` their English names when the edge
config gives them), else by the device's kind and nameplate id.
Times are in the subscription's zone, as people write them there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from linli.catalog.alerts import AlertMessage
from linli.catalog.i18n import DISTRICT_ZONE, Locale, catalog, clock, text
from linli.catalog.profile import Severity

NoticeKind = Literal["firing", "repeat", "escalation", "resolved"]
INTERLOCK = "interlock."
# The stored alert's `label` in each locale (measurement `alert`; the dashboards' annotations).
LABEL_FIELDS: dict[Locale, str] = {"zh-CN": "label", "en": "label_en"}


def known(key: str, locale: Locale) -> bool:
    return key in catalog(locale)


def title(alert: AlertMessage, locale: Locale) -> str:
    """What is wrong, in `locale`."""
    key = f"alert.rule.{alert.rule}"
    if known(key, locale):
        return text(key, locale)
    if alert.rule.startswith(INTERLOCK):
        return text("alert.interlock", locale, cause=_interlock_cause(alert, locale))
    return alert.title or alert.rule


def _interlock_cause(alert: AlertMessage, locale: Locale) -> str:
    # interlock.<kind>.<field> acts on the same field as the profile's rule <kind>.<field>.<side>.
    field_rule = alert.rule.removeprefix(INTERLOCK)
    for side in ("above", "below"):
        key = f"alert.rule.{field_rule}.{side}"
        if known(key, locale):
            return text(key, locale)
    return field_rule.rpartition(".")[2]


def device(alert: AlertMessage, locale: Locale) -> str:
    """The device as people name it; without a name, its kind and the id on its nameplate."""
    name = (alert.device_name_en if locale == "en" else "") or alert.device_name
    if name:
        return name
    key = f"alert.kind.{alert.kind}"
    kind = text(key, locale) if known(key, locale) else alert.kind
    return text("alert.device", locale, kind=kind, device=alert.device)


def site(alert: AlertMessage, locale: Locale) -> str:
    """The site as people name it; empty for an edge agent, which belongs to no site."""
    return (alert.site_name_en if locale == "en" else "") or alert.site_name or alert.site


def where(alert: AlertMessage, locale: Locale) -> str:
    """The site, the device and its port, as people name them."""
    site_ = site(alert, locale)
    if not site_:  # an edge agent belongs to no site
        return device(alert, locale)
    key = "alert.where.port" if alert.port else "alert.where"
    return text(key, locale, site=site_, device=device(alert, locale), port=alert.port)


def subject(kind: NoticeKind, alert: AlertMessage, locale: Locale) -> str:
    """One line: what happened, how bad, where, and what."""
    return text(
        "alert.subject",
        locale,
        headline=text(f"alert.notice.{kind}", locale),
        severity=text(f"alert.severity.{alert.severity}", locale),
        where=where(alert, locale),
        title=title(alert, locale),
    )


def label(alert: AlertMessage, locale: Locale) -> str:
    """What and where, as a dashboard's annotation shows it."""
    return text("alert.label", locale, where=where(alert, locale), title=title(alert, locale))


def details(kind: NoticeKind, alert: AlertMessage, locale: Locale, zone: str = DISTRICT_ZONE) -> list[str]:
    """The lines under the subject: the value, since when (and when it ended), who saw it."""
    lines = []
    if alert.value is not None:
        key = "alert.silent" if alert.rule.endswith(".silent") else "alert.value"
        lines.append(text(key, locale, value=f"{alert.value:g}", threshold=f"{alert.threshold:g}"))
    now = alert.time_ms / 1000
    lines.append(text("alert.since", locale, since=clock(alert.since_ms / 1000, locale, now=now, zone=zone)))
    if kind == "resolved":
        lines.append(text("alert.resolved_at", locale, at=clock(now, locale, now=now, zone=zone)))
    lines.append(text("alert.edge", locale, edge=alert.edge))
    return lines


# How each alert of a group's message stands: told for the first time, told before, resolved.
Standing = Literal["new", "firing", "resolved"]


def group_subject(kind: NoticeKind, alerts: Sequence[AlertMessage], locale: Locale) -> str:
    """One line for a group: what happened, how bad at worst, where, what, and how many."""
    lead = alerts[0]
    sites = {site(a, locale) for a in alerts}
    worst = Severity.CRITICAL if any(a.severity is Severity.CRITICAL for a in alerts) else Severity.WARNING
    return text(
        "alert.group.subject",
        locale,
        headline=text(f"alert.notice.{kind}", locale),
        severity=text(f"alert.severity.{worst}", locale),
        site=site(lead, locale)
        if len(sites) == 1 and sites != {""}
        else text("alert.group.anywhere", locale),
        title=title(lead, locale)
        if len({a.rule for a in alerts}) == 1
        else text("alert.group.several", locale),
        count=len(alerts),
    )


def group_details(
    listed: Sequence[tuple[Standing, AlertMessage]], limit: int, link: str, locale: Locale, zone: str
) -> list[str]:
    """The lines under a group's subject: the counts, the first `limit` alerts, the link to all."""
    count = {standing: sum(s == standing for s, _ in listed) for standing in ("new", "firing", "resolved")}
    lines = [text("alert.group.counts", locale, **count)]
    for standing, alert in listed[:limit]:
        since = clock(alert.since_ms / 1000, locale, now=alert.time_ms / 1000, zone=zone)
        mark = text(f"alert.group.mark.{standing}", locale)
        lines.append(
            text(
                "alert.group.item",
                locale,
                mark=mark,
                where=where(alert, locale),
                title=title(alert, locale),
                since=since,
            )
        )
    more = len(listed) - limit
    lines.append(
        text("alert.group.more", locale, count=more, link=link)
        if more > 0
        else text("alert.group.link", locale, link=link)
    )
    return lines
