"""Cursor paging for every list the notifier's and the waste service's APIs answer.

A list takes `?limit=` (default `DEFAULT_LIMIT`, at most `MAX_LIMIT`) and `?cursor=`; the body
stays the list itself, and when more follow, the answer has a `Link: <...>; rel="next"` header
(RFC 8288) with the URL of the next page: the same query with `cursor` set. No `Link`: the
last page. A cursor is opaque (the key of the last item given, base64url); one the client made
up is a 404 problem (no such page). Items added while a client pages are not given twice.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, HTTPException, Query, Request, Response

T = TypeVar("T")
Key = list[Any]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
Limit = Annotated[
    int,
    Query(ge=1, le=MAX_LIMIT, description=f"items per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})"),
]
Cursor = Annotated[
    str | None,
    Query(
        max_length=400,
        pattern=r"^[A-Za-z0-9_-]+$",
        description='where the page begins: from the `Link: <...>; rel="next"` header of the one before',
    ),
]
NEXT = {
    "Link": {
        "description": 'the next page: `<URL>; rel="next"`; absent on the last page',
        "schema": {"type": "string"},
    }
}
# A list's answers in the document: a page with its Link header, or no such page.
PAGED: dict[int | str, dict[str, Any]] = {
    200: {"description": "a page of the list", "headers": NEXT},
    404: {"description": "a cursor this API did not give: no such page"},
}
WRONG = "no such page: not a cursor this API gave; start again without one"


@dataclass(frozen=True)
class Paging:
    """A list's request: which page, and the answer to put the next one's Link on."""

    request: Request
    response: Response
    limit: int
    cursor: str | None


def _paging(
    request: Request, response: Response, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Paging:
    return Paging(request, response, limit, cursor)


# An endpoint's parameter: `?limit=` and `?cursor=`, in the document too.
Paged = Annotated[Paging, Depends(_paging)]


def encode(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(cursor: str | None) -> Key | None:
    """The key a cursor holds; 400 for one this API did not give."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        key = None
    if not isinstance(key, list) or not key or not all(isinstance(k, str | int | float) for k in key):
        raise HTTPException(404, WRONG)
    return key


def link_next(paging: Paging, key: Key) -> None:
    """The Link header to the page after the item of `key`."""
    query = {**paging.request.query_params, "limit": str(paging.limit), "cursor": encode(key)}
    paging.response.headers["Link"] = f'<{paging.request.url.path}?{urlencode(query)}>; rel="next"'


def page(
    items: Sequence[T], key: Callable[[T], Key], paging: Paging, *, newest_first: bool = False
) -> list[T]:
    """One page of a list held in memory, in the order of `key` (descending if `newest_first`)."""
    after = decode(paging.cursor)
    ordered = sorted(items, key=key, reverse=newest_first)
    if after is not None:
        try:
            ordered = [i for i in ordered if (key(i) < after if newest_first else key(i) > after)]
        except TypeError:  # a cursor of another list
            raise HTTPException(404, WRONG) from None
    shown = ordered[: paging.limit]
    if len(ordered) > paging.limit:
        link_next(paging, key(shown[-1]))
    return shown


def rows_page(
    fetch: Callable[[int | None, int], list[dict[str, Any]]], paging: Paging
) -> list[dict[str, Any]]:
    """One page of stored rows: `fetch(after_id, n)` gives up to n rows after the row `after_id`
    in its order (each with its `id`), so a page reads only its own rows."""
    after = decode(paging.cursor)
    if after is not None and not (len(after) == 1 and isinstance(after[0], int)):
        raise HTTPException(404, WRONG)
    rows = fetch(None if after is None else after[0], paging.limit + 1)
    shown = rows[: paging.limit]
    if len(rows) > paging.limit:
        link_next(paging, [shown[-1]["id"]])
    return shown
