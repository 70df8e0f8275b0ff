"""The notifier's HTTP API: subscriptions, active alerts, acknowledgement. Bearer-token auth.

A guard in front of the application checks the token and its scope before a byte of the body
is read (401 for no token or a wrong or revoked one, 403 for a scope too narrow), and refuses
bodies over `MAX_BODY` bytes with 413, so an anonymous client cannot make the notifier buffer
a large upload. Every answer it can give is in the OpenAPI document.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Request, status
from prometheus_client.core import Metric
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp

from linli.catalog.alerts import AlertMessage
from linli.catalog.errors import validation_reason
from linli.cloud.headers import Protect
from linli.cloud.notifier.amwebhook import AmWebhook, to_alert
from linli.cloud.notifier.config import SUB_ID, Subscription
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.guard import NO_NUL, Guard, doc, guarded
from linli.cloud.notifier.records_api import add_records
from linli.cloud.notifier.routing import inhibitor
from linli.cloud.notifier.silences_api import add_silences
from linli.cloud.paging import PAGED, Paged, page
from linli.cloud.prom import add_metrics, counter, gauge
from linli.cloud.tokens import Holder, TokenBook

FINGERPRINT = r"^[0-9a-f]{16}$"


class Ack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL, description="Who acknowledges")]


class Acked(BaseModel):
    fingerprint: str
    acked_by: str


class OpenAlert(AlertMessage):
    """An alert firing now, with who acknowledged it and which subscriptions heard of it."""

    acked_by: str | None
    told: list[str]
    inhibited_by: str | None = Field(
        description="the fingerprint of the firing alert that keeps this one from being told"
    )


class PausedDestination(BaseModel):
    """A destination (a scheme, host and port, or smtp, or mqtt) nothing is sent to for now."""

    destination: str
    failures: int = Field(description="failures in a row")
    for_s: float = Field(description="seconds until one delivery probes it again")
    last_error: str
    waiting: int = Field(description="deliveries waiting for it")


class Taken(BaseModel):
    """How many alerts a post handed to the notifier."""

    taken: int


class Stats(BaseModel):
    """What the notifier took and refused since it started."""

    handled: dict[str, int] = Field(description="alert events taken, by device kind")
    rejected: dict[str, int] = Field(
        description="events refused at the door, by reason: malformed, invalid, not_finite, too_large"
    )
    errors: dict[str, int] = Field(description="alerts quarantined or failing, by step")
    delivering: int = Field(description="deliveries under way")
    failed_deliveries: dict[str, int] = Field(description="deliveries recorded as failed, by channel kind")
    waiting: dict[str, int] = Field(
        description="deliveries waiting their turn or a pause's end, by destination"
    )
    paused: list[PausedDestination] = Field(description="destinations paused after failing again and again")


def add_alertmanager(api: FastAPI, notifier: Notifier) -> None:
    """`POST /alertmanager`: alerts in Alertmanager's webhook format, on the notifier's loop."""

    @api.post("/alertmanager", responses=doc(503))
    async def from_alertmanager(body: AmWebhook) -> Taken:
        """Alerts in Alertmanager's webhook format (version 4: Prometheus's Alertmanager, Grafana
        alerting), each taken as an edge's alert event (labels: `alertname` the rule, `severity`,
        `site`, `device`, `kind`, `site_name`, `device_name`). Needs `ack`."""
        now_ms = int(time.time() * 1000)
        try:
            events = [to_alert(a, now_ms) for a in body.alerts]
        except ValidationError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, validation_reason(exc)) from exc
        for event in events:
            if not notifier.handle(event):
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE, "the state is unreachable; post again"
                )
        return Taken(taken=len(events))


def app(notifier: Notifier, token: str, book: TokenBook) -> ASGIApp:
    """The API over one notifier; every call needs `Authorization: Bearer <token>` of a scope."""
    api = guarded(
        "linli notifier",
        "Alert subscriptions and active alerts. Tokens have a scope: `read` (GET), `ack` (read and "
        "acknowledge), `admin` (everything: subscriptions, tokens, the audit log).",
    )

    deliveries = notifier.deliveries

    def who(request: Request) -> str:
        holder: Holder = request.state.holder
        return holder.name

    @api.get("/alerts", response_model=list[OpenAlert], responses=PAGED)
    def alerts(
        *,
        paged: Paged,
        site: str | None = None,
        rule: str | None = None,
        kind: str | None = None,
        device: str | None = None,
        edge: str | None = None,
        severity: str | None = None,
        fingerprint: str | None = None,
    ) -> list[dict[str, Any]]:
        """Alerts firing now, oldest first (by when the notifiers first saw them); with labels given, only
        those that have them (a grouped message links here with its group's labels:
        `?site=x&rule=y`)."""
        given = {
            "site": site, "rule": rule, "kind": kind, "device": device, "edge": edge,
            "severity": severity, "fingerprint": fingerprint,
        }  # fmt: skip
        wanted = {label: value for label, value in given.items() if value is not None}
        book = notifier.active()
        found = [
            a for a in book if all(str(getattr(a.alert, label)) == value for label, value in wanted.items())
        ]
        shown = page(found, lambda a: [a.first_s, a.alert.fingerprint], paged)
        return [
            {
                **a.alert.model_dump(mode="json"),
                "acked_by": a.acked_by,
                "told": sorted(a.told),
                "inhibited_by": inhibitor(notifier.config.inhibit, a.alert, book),
            }
            for a in shown
        ]

    @api.post("/alerts/{fingerprint}/ack", responses=doc(404))
    def ack(fingerprint: Annotated[str, Path(pattern=FINGERPRINT)], body: Ack, request: Request) -> Acked:
        """Acknowledge a firing alert: no more repeats, no escalation. Needs `ack`."""
        by = notifier.ack(fingerprint, body.by)
        if by is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no firing alert {fingerprint}")
        book.audit(
            who(request), "ack", fingerprint, f"by {body.by}" + ("" if by == body.by else f"; {by} first")
        )
        return Acked(fingerprint=fingerprint, acked_by=by)

    add_silences(api, notifier, book)
    add_alertmanager(api, notifier)

    @api.get("/subscriptions", responses=PAGED)
    def subscriptions(paged: Paged) -> list[Subscription]:
        """Every subscription, by id."""
        return page(notifier.store.subscriptions(), lambda s: [s.id], paged)

    @api.put("/subscriptions/{sub_id}", responses=doc(409))
    def put(
        sub_id: Annotated[str, Path(pattern=SUB_ID)], sub: Subscription, request: Request
    ) -> Subscription:
        """Create or replace a subscription. Needs `admin`."""
        if sub.id != sub_id:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"the body's id is '{sub.id}', the path's '{sub_id}'"
            )
        known = {s.id for s in notifier.store.subscriptions()} | {sub.id}
        unknown = sorted(set(sub.escalate_to) - known)
        if unknown:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"escalate_to names no subscription: {', '.join(unknown)}"
            )
        notifier.store.put_subscription(sub)
        book.audit(who(request), "put_subscription", sub_id, sub.model_dump_json(exclude_defaults=True))
        return sub

    @api.delete("/subscriptions/{sub_id}", status_code=status.HTTP_204_NO_CONTENT, responses=doc(404))
    def delete(sub_id: Annotated[str, Path(pattern=SUB_ID)], request: Request) -> None:
        """Needs `admin`."""
        if not notifier.store.delete_subscription(sub_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no subscription {sub_id}")
        book.audit(who(request), "delete_subscription", sub_id)

    add_records(api, notifier, book)

    @api.get("/stats")
    def stats() -> Stats:
        """Events taken and refused, and failures, since the notifier started."""
        return Stats(
            handled=dict(notifier.handled),
            rejected=dict(notifier.rejected),
            errors=dict(notifier.errors),
            delivering=notifier.delivering,
            failed_deliveries=dict(deliveries.gave_up),
            waiting=deliveries.destinations.waiting(),
            paused=[
                PausedDestination(
                    destination=p.destination,
                    failures=p.failures,
                    for_s=max(0.0, p.until_s - time.monotonic()),
                    last_error=p.last_error,
                    waiting=p.waiting,
                )
                for p in deliveries.destinations.paused()
            ],
        )

    def families() -> list[Metric]:
        active = notifier.active()
        by_severity: Counter[str] = Counter(str(a.alert.severity) for a in active)
        return [
            counter(
                "linli_notifier_events", "Alert events taken, by device kind", dict(notifier.handled), "kind"
            ),
            counter(
                "linli_notifier_rejected",
                "Alert events refused, by reason",
                dict(notifier.rejected),
                "reason",
            ),
            counter(
                "linli_notifier_errors",
                "Alerts quarantined or failing, by step",
                dict(notifier.errors),
                "step",
            ),
            gauge(
                "linli_notifier_alerts_open", "Alerts firing now, by severity", dict(by_severity), "severity"
            ),
            gauge(
                "linli_notifier_alerts_unacknowledged",
                "Alerts firing, nobody acknowledged",
                sum(a.acked_by is None for a in active),
            ),
            gauge("linli_notifier_deliveries_under_way", "Deliveries under way", notifier.delivering),
            counter(
                "linli_notifier_delivery_failures",
                "Deliveries recorded as failed, by channel kind",
                dict(deliveries.gave_up),
                "channel",
            ),
            gauge(
                "linli_notifier_deliveries_waiting",
                "Deliveries waiting their turn or a pause's end, by destination",
                {name: float(n) for name, n in deliveries.destinations.waiting().items()},
                "destination",
            ),
            gauge(
                "linli_notifier_destinations_paused",
                "Destinations paused after failing again and again",
                len(deliveries.destinations.paused()),
            ),
            gauge("linli_notifier_subscriptions", "Subscriptions", len(notifier.store.subscriptions())),
            gauge(
                "linli_notifier_failed_deliveries",
                "Deliveries that kept failing, kept for a look",
                len(notifier.store.failures()),
            ),
        ]

    add_metrics(api, families)

    @api.get("/health")
    def health() -> dict[str, int]:
        """In one look: alerts open and unacknowledged, deliveries, events taken and refused."""
        active = notifier.active()
        return {
            "alerts_open": len(active),
            "alerts_unacknowledged": sum(a.acked_by is None for a in active),
            "delivering": notifier.delivering,
            "events": sum(notifier.handled.values()),
            "rejected": sum(notifier.rejected.values()),
            "errors": sum(notifier.errors.values()),
        }

    return Protect(Guard(api, token, book=book))
