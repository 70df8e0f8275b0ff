"""The notifier API's `/silences`: list, make, expire and delete silences, each audited."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import FastAPI, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from linli.cloud.notifier import silences as silences_
from linli.cloud.notifier.config import Matcher, Silence
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.guard import NO_NUL, doc
from linli.cloud.paging import PAGED, Paged, page
from linli.cloud.scope import Scope
from linli.cloud.tokens import Holder, TokenBook

SILENCE_ID = r"^[0-9a-f]{16}$"


class SilenceIn(BaseModel):
    """A silence to make: its author is the token's holder."""

    model_config = ConfigDict(extra="forbid")

    matchers: Matcher
    starts_s: Annotated[float, Field(ge=0)] | None = None
    duration_s: Annotated[float, Field(gt=0, le=silences_.LONGEST_S)]
    comment: Annotated[str, Field(min_length=1, max_length=1000, pattern=NO_NUL, description="why")]


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
