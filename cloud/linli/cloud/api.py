"""The notifier's HTTP API: subscriptions, active alerts, acknowledgement. Bearer-token auth."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from linli.cloud.config import Subscription
from linli.cloud.notifier import Notifier

bearer = HTTPBearer(auto_error=False)


class Ack(BaseModel):
    by: str


def app(notifier: Notifier, token: str) -> FastAPI:
    """The API over one notifier; every call needs `Authorization: Bearer <token>`."""
    api = FastAPI(title="linli notifier", version="1", description="Alert subscriptions and active alerts.")

    def auth(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if creds is None or not secrets.compare_digest(creds.credentials, token):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required")

    guarded = [Depends(auth)]

    @api.get("/alerts", dependencies=guarded)
    def alerts() -> list[dict[str, Any]]:
        """Alerts firing now, oldest first."""
        return [
            {**a.alert.model_dump(mode="json"), "acked_by": a.acked_by, "told": sorted(a.told)}
            for a in notifier.active()
        ]

    @api.post("/alerts/{fingerprint}/ack", dependencies=guarded)
    def ack(fingerprint: str, body: Ack) -> dict[str, Any]:
        """Acknowledge a firing alert: no more repeats, no escalation."""
        by = notifier.ack(fingerprint, body.by)
        if by is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no firing alert {fingerprint}")
        return {"fingerprint": fingerprint, "acked_by": by}

    @api.get("/subscriptions", dependencies=guarded)
    def subscriptions() -> list[Subscription]:
        return notifier.store.subscriptions()

    @api.put("/subscriptions/{sub_id}", dependencies=guarded)
    def put(sub_id: str, sub: Subscription) -> Subscription:
        """Create or replace a subscription."""
        if sub.id != sub_id:
            raise HTTPException(422, f"the body's id is '{sub.id}', the path's '{sub_id}'")
        notifier.store.put_subscription(sub)
        return sub

    @api.delete("/subscriptions/{sub_id}", dependencies=guarded, status_code=status.HTTP_204_NO_CONTENT)
    def delete(sub_id: str) -> None:
        if not notifier.store.delete_subscription(sub_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no subscription {sub_id}")

    @api.get("/failed-deliveries", dependencies=guarded)
    def failed() -> list[dict[str, Any]]:
        """Deliveries that kept failing, with the error of the last attempt."""
        return notifier.store.failures()

    return api
