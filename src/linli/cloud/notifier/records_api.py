"""The notifier API's read-outs kept for a look: failed deliveries, quarantined rows, the audit
log and the tokens."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, Field

from linli.cloud.notifier.engine import Notifier
from linli.cloud.paging import PAGED, Paged, page, rows_page
from linli.cloud.scope import Scope
from linli.cloud.tokens import TokenBook


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
