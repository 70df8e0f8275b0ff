"""The notifier's HTTP API: subscriptions, active alerts, acknowledgement. Bearer-token auth.

A guard in front of the application checks the token and its scope before a byte of the body
is read (401 for no token or a wrong or revoked one, 403 for a scope too narrow), and refuses
bodies over `MAX_BODY` bytes with 413, so an anonymous client cannot make the notifier buffer
a large upload. Every answer it can give is in the OpenAPI document.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from prometheus_client.core import Metric
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as ASGIScope

from linli.catalog.alerts import AlertMessage
from linli.catalog.errors import validation_reason
from linli.cloud.docs_page import PATHS as DOCS
from linli.cloud.docs_page import add_docs
from linli.cloud.headers import Protect
from linli.cloud.notifier import silences as silences_
from linli.cloud.notifier.amwebhook import AmWebhook, to_alert
from linli.cloud.notifier.config import SUB_ID, Matcher, Silence, Subscription
from linli.cloud.notifier.engine import Notifier, inhibitor
from linli.cloud.paging import PAGED, Paged, page, rows_page
from linli.cloud.problems import (
    Problem,
    document_problems,
    http_problem,
    problem_messages,
    problem_response,
    server_problem,
)
from linli.cloud.prom import add_metrics, counter, gauge
from linli.cloud.scope import Scope
from linli.cloud.tokens import ENV_TOKEN, Holder, Needed, TokenBook, needed

# Large enough for any subscription the models allow, small enough to hold in memory.
MAX_BODY = 256 * 1024
# Paths anyone may read: the API's own description.
PUBLIC = frozenset({"/openapi.json", *DOCS})
FINGERPRINT = r"^[0-9a-f]{16}$"
SILENCE_ID = r"^[0-9a-f]{16}$"
# PostgreSQL's text holds no NUL character: refused as invalid (422), not failed on (500).
NO_NUL = r"^[^\x00]*$"


class Ack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL, description="Who acknowledges")]


class SilenceIn(BaseModel):
    """A silence to make: its author is the token's holder."""

    model_config = ConfigDict(extra="forbid")

    matchers: Matcher
    starts_s: Annotated[float, Field(ge=0)] | None = None
    duration_s: Annotated[float, Field(gt=0, le=silences_.LONGEST_S)]
    comment: Annotated[str, Field(min_length=1, max_length=1000, pattern=NO_NUL, description="why")]


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


class FailedDelivery(BaseModel):
    at_ms: int
    subscription: str
    channel: str
    fingerprint: str
    notice: str
    error: str


class Quarantined(BaseModel):
    """A stored row that no longer read back, taken out of the state with the reason."""

    at_ms: int
    source: str = Field(description="alert or subscription")
    key: str
    reason: str
    body: str


class AuditEntry(BaseModel):
    at_ms: int
    who: str = Field(description="the token's name")
    action: str = Field(
        description="ack, put_subscription, delete_subscription, token_create, token_revoke, silence, "
        "expire_silence, delete_silence"
    )
    target: str
    detail: str


class TokenInfo(BaseModel):
    id: str
    name: str
    scope: Scope
    created_ms: int
    revoked_ms: int | None


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


class Guard:
    """ASGI middleware: the token and its scope first, then the body's size, then the application.

    The token from the environment may do everything (`admin`); tokens from `book` what their
    scope allows, `need` saying which scope a request needs (the notifier's rules by default).
    Who made the request is left in the request's state as `holder`.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        public: frozenset[str] = frozenset(),
        book: TokenBook | None = None,
        need: Needed = needed,
    ) -> None:
        self.app = app
        self.need = need
        self.public = PUBLIC | public  # pages that hold no data; what they fetch needs the token
        # Compared as bytes: a header with non-ASCII characters is just a wrong token.
        self.expected = token.encode()
        self.book = book

    def _holder(self, given: bytes) -> Holder | None:
        # The scheme is case-insensitive (RFC 9110); the token is not.
        if given[:7].lower() != b"bearer " or len(given) == 7:
            return None
        token = given[7:]
        if self.expected and secrets.compare_digest(token, self.expected):
            return Holder(ENV_TOKEN, Scope.ADMIN)
        return self.book.holder(token) if self.book is not None else None

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        path: str = scope["path"]
        holder = self._holder(headers.get(b"authorization", b""))
        if holder is None:
            challenge = [(b"www-authenticate", b"Bearer")]
            for message in problem_messages(401, "a valid bearer token is required", path, challenge):
                await send(message)
            return
        wanted = self.need(scope["method"], scope["path"])
        if not holder.scope.allows(wanted):
            detail = f"token '{holder.name}' has scope '{holder.scope}'; this needs '{wanted}'"
            for message in problem_messages(403, detail, path):
                await send(message)
            return
        scope.setdefault("state", {})["holder"] = holder
        length = headers.get(b"content-length", b"0")
        too_large = f"the body may be at most {MAX_BODY} bytes"
        if not length.isdigit() or int(length) > MAX_BODY:
            for message in problem_messages(413, too_large, path):
                await send(message)
            return
        body = await self._read(receive)
        if body is None:
            for message in problem_messages(413, too_large, path):
                await send(message)
            return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    async def _read(receive: Receive) -> bytes | None:
        """The whole body, or None once it passes MAX_BODY (a chunked upload has no length)."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(parts)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def doc(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {
        409: "the request contradicts itself or the state",
        401: "no token, or a wrong or revoked one",
        403: "the token's scope does not allow this (book < read < ack < admin)",
        404: "no such thing",
        413: f"a body over {MAX_BODY} bytes",
        503: "the state cannot be reached; try again",
    }
    return {code: {"model": Problem, "description": what[code]} for code in codes}


def validation_detail(exc: RequestValidationError) -> str:
    """What the models refused, in a line: each place and why."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


async def invalid(request: Request, exc: Exception, **extra: Any) -> JSONResponse:
    """422 as a problem, with each of the models' refusals in `errors` as FastAPI says them; a NaN
    or infinity the client sent is echoed as text, since JSON has no such number (FastAPI's own
    answer failed there with a 500)."""
    assert isinstance(exc, RequestValidationError)
    errors = _finite(jsonable_encoder(exc.errors()))
    return problem_response(422, validation_detail(exc), request.url.path, errors=errors, **extra)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def guarded(title: str, description: str) -> FastAPI:
    """An API whose document states the bearer scheme and the guard's refusals (wrap it in Guard)."""
    api = FastAPI(
        title=title,
        version="1",
        description=description,
        docs_url=None,  # served from this package by `add_docs`, not from a CDN
        redoc_url=None,
        responses=doc(401, 403, 413),
        # Only for the document's security scheme: the Guard checks the token, before the body.
        dependencies=[Depends(HTTPBearer(auto_error=False))],
        exception_handlers={
            RequestValidationError: invalid,
            StarletteHTTPException: http_problem,
            Exception: server_problem,
        },
    )
    document_problems(api)
    add_docs(api)
    return api


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


def add_records(api: FastAPI, notifier: Notifier, book: TokenBook) -> None:
    """What was recorded for a look: failed deliveries, quarantined rows, the audit log, tokens."""

    @api.get("/failed-deliveries", responses=PAGED)
    def failed(paged: Paged) -> list[FailedDelivery]:
        """Deliveries that kept failing, with the error of the last attempt, oldest first."""
        rows = rows_page(notifier.store.failures, paged)
        return [FailedDelivery.model_validate(row) for row in rows]

    @api.get("/quarantine", responses=PAGED)
    def quarantine(paged: Paged) -> list[Quarantined]:
        """Stored alerts and subscriptions that no longer read back, newest first."""
        rows = rows_page(notifier.store.quarantined, paged)
        return [Quarantined.model_validate(row) for row in rows]

    @api.get("/audit", responses=PAGED)
    def audit(paged: Paged) -> list[AuditEntry]:
        """Every acknowledgement and change, newest first. Needs `admin`."""
        rows = rows_page(lambda before, n: book.audit_log(n, before), paged)
        return [AuditEntry.model_validate(row) for row in rows]

    @api.get("/tokens", responses=PAGED)
    def tokens(paged: Paged) -> list[TokenInfo]:
        """The API's tokens, without their secrets, oldest first. Needs `admin`."""
        rows = page(book.tokens(), lambda t: [t["created_ms"], t["id"]], paged)
        return [TokenInfo.model_validate(row) for row in rows]


def add_silences(api: FastAPI, notifier: Notifier, book: TokenBook) -> None:
    """`/silences`: list, make, expire and delete silences, each audited."""

    @api.get("/silences", responses=PAGED)
    def silences(
        paged: Paged,
        ended: Annotated[bool, Query(description="the ended (expired) ones too, until deleted")] = False,
    ) -> list[Silence]:
        """Silences not ended yet (with `ended`, every one not deleted), the soonest ending first."""
        found = notifier.store.silences(0.0 if ended else time.time())
        return page(found, lambda s: [s.ends_s, s.id], paged)

    @api.post("/silences", responses=doc(403))
    def silence(body: SilenceIn, request: Request) -> Silence:
        """Silence the alerts matching `matchers` for `duration_s` from `starts_s` (default now).
        Needs `ack`; one that could hold a life-safety alert needs `admin`."""
        holder: Holder = request.state.holder
        try:
            made = silences_.make(
                notifier.config, body.matchers,
                starts_s=time.time() if body.starts_s is None else body.starts_s,
                duration_s=body.duration_s, author=holder.name, comment=body.comment,
                admin=holder.scope is Scope.ADMIN,
            )  # fmt: skip
        except silences_.SilenceError as exc:
            raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from exc
        notifier.store.put_silence(made)
        book.audit(holder.name, "silence", made.id, made.model_dump_json())
        return made

    @api.post("/silences/{silence_id}/expire", responses=doc(404))
    def expire(silence_id: Annotated[str, Path(pattern=SILENCE_ID)], request: Request) -> Silence:
        """End a silence now: the alerts it held that still fire are told. Needs `ack`."""
        ended = silences_.expire(notifier.store, silence_id, time.time())
        if ended is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no running silence {silence_id}")
        holder: Holder = request.state.holder
        book.audit(holder.name, "expire_silence", silence_id)
        return ended

    @api.delete("/silences/{silence_id}", responses=doc(403, 404))
    def delete(silence_id: Annotated[str, Path(pattern=SILENCE_ID)], request: Request) -> Silence:
        """Forget a silence, running or ended: it holds nothing and is no longer listed; the
        silence as it was. Needs `ack`; one that could hold a life-safety alert needs `admin`."""
        holder: Holder = request.state.holder
        try:
            gone = silences_.delete(
                notifier.config, notifier.store, silence_id, admin=holder.scope is Scope.ADMIN
            )
        except silences_.SilenceError as exc:
            raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from exc
        if gone is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no silence {silence_id}")
        book.audit(holder.name, "delete_silence", silence_id, gone.model_dump_json())
        return gone
