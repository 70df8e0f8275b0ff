"""Alerts in Alertmanager's webhook format (version 4), so that Prometheus's Alertmanager or
Grafana alerting can feed the notifier: each alert of a posted group becomes an alert event like
an edge's, grouped, inhibited, silenced and told as they are.

The labels say what linli reads from an edge's alert: `alertname` the rule, `severity`
(`critical`, or else a warning), `site`, `device`, `kind`, `edge` (`alertmanager` when unset),
`site_name` and `device_name` (names people know); the `summary` annotation the title. The
fingerprint is linli's own, from the rule, site and device, so that the same alert posted
again only refreshes it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from linli.catalog.alerts import AlertMessage, AlertState, fingerprint
from linli.catalog.profile import Severity

Text = Annotated[str, Field(max_length=1024)]
Labels = Annotated[dict[Annotated[str, Field(max_length=128)], Text], Field(max_length=64)]


class AmAlert(BaseModel):
    """One alert of an Alertmanager group (the fields linli reads; others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = {}
    startsAt: datetime  # noqa: N815 (Alertmanager's field names)
    endsAt: datetime | None = None  # noqa: N815


class AmWebhook(BaseModel):
    """Alertmanager's webhook body, version 4."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    alerts: Annotated[list[AmAlert], Field(max_length=1000)]


def _ms(at: datetime) -> int:
    return max(0, int(at.timestamp() * 1000))


def to_alert(am: AmAlert, now_ms: int) -> AlertMessage:
    """The alert event an Alertmanager alert stands for; ValueError (pydantic's) if a label is
    too long for linli's fields."""
    labels = am.labels
    rule = labels.get("alertname", "alertmanager")
    site, device = labels.get("site", ""), labels.get("device", labels.get("instance", ""))
    resolved = am.status == "resolved"
    return AlertMessage(
        fingerprint=fingerprint(rule, site, device, None),
        rule=rule,
        title=am.annotations.get("summary", rule)[:256],
        severity=Severity.CRITICAL if labels.get("severity") == "critical" else Severity.WARNING,
        state=AlertState.RESOLVED if resolved else AlertState.FIRING,
        kind=labels.get("kind", "alertmanager"),
        site=site,
        device=device,
        port=None,
        value=None,
        threshold=0,
        time_ms=_ms(am.endsAt) if resolved and am.endsAt is not None else now_ms,
        since_ms=_ms(am.startsAt),
        edge=labels.get("edge", "alertmanager"),
        site_name=labels.get("site_name", ""),
        device_name=labels.get("device_name", ""),
    )
