"""Every list of the notifier's and the waste service's APIs pages: `?limit=` and an opaque
`?cursor=`, the next page's URL in a `Link: <...>; rel="next"` header, none on the last page;
nothing given twice when rows are added while a client pages, and no cut at 1,000."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx

from linli.cloud.notifier.api import app as notifier_app
from linli.cloud.notifier.channels import Sender
from linli.cloud.notifier.config import NotifierConfig, SmtpConfig, Subscription
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.store import Store
from linli.cloud.paging import DEFAULT_LIMIT, MAX_LIMIT, WRONG
from linli.cloud.tokens import TokenBook
from linli.cloud.waste.api import app as waste_app
from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.service import WasteService
from linli.cloud.waste.tracking import KeeperNotice, NoticeKind
from linli.demo.view import every
from linli.transit.gtfs import load_feed
from support import serving
from test_api_problems import is_problem
from test_waste_service import FEED

TOKEN = "paging-s3cret"  # noqa: S105 (the test's own)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEXT = re.compile(r'^<(/[^>]*)>; rel="next"$')


async def pages(api: httpx.AsyncClient, url: str, between: Any = None) -> list[list[dict[str, Any]]]:
    """Every page of a list, following the Link headers; `between()` runs after the first page."""
    found = []
    while True:
        answer = await api.get(url, headers=AUTH)
        assert answer.status_code == 200, answer.text
        found.append(answer.json())
        link = answer.headers.get("link")
        if link is None:
            return found
        match = NEXT.match(link)
        assert match, link
        url = match[1]
        if between is not None and len(found) == 1:
            between()


def notifier(state: str) -> tuple[Any, Store, TokenBook]:
    config = NotifierConfig.model_validate({"state": state})
    store = Store(config.state)
    book = TokenBook(config.state)
    return notifier_app(Notifier(config, store, Sender(SmtpConfig()), time.time), TOKEN, book), store, book


def subscribe(store: Store, count: int) -> None:
    """Subscriptions sub-0, sub-1, ..."""
    for n in range(count):
        sub = {"id": f"sub-{n}", "channels": [{"kind": "webhook", "url": "http://x/"}]}
        store.put_subscription(Subscription.model_validate(sub))


def test_the_notifier_s_lists_page_by_cursor(state: str) -> None:
    app, store, book = notifier(state)
    subscribe(store, 7)
    for n in range(MAX_LIMIT + 3):  # more than the 1,000 the log was cut at
        book.audit("test", "action", f"t-{n}")
    alert = {"alert": {"fingerprint": "0123456789abcdef"}, "notice": "firing"}
    for n in range(5):
        store.record_failure(n, f"sub-{n}", "webhook", alert, "HTTP 500")

    async def scenario() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            return {
                "subscriptions": await pages(api, "/subscriptions?limit=3"),
                "all subscriptions": await pages(api, "/subscriptions"),
                "audit": await pages(api, f"/audit?limit={MAX_LIMIT}"),
                "audit by 400": await pages(
                    api, "/audit?limit=400", between=lambda: book.audit("test", "action", "added")
                ),
                "failed": await pages(api, "/failed-deliveries?limit=2"),
                "too many": await api.get(f"/audit?limit={MAX_LIMIT + 1}", headers=AUTH),
                "made up": await api.get("/audit?cursor=bm90LWEta2V5", headers=AUTH),
                "document": (await api.get("/openapi.json")).json(),
            }

    out = asyncio.run(scenario())
    assert [[s["id"] for s in p] for p in out["subscriptions"]] == [
        ["sub-0", "sub-1", "sub-2"], ["sub-3", "sub-4", "sub-5"], ["sub-6"],
    ]  # fmt: skip
    assert len(out["all subscriptions"]) == 1  # 7 < the default limit
    audit = out["audit"]
    assert [len(p) for p in audit] == [MAX_LIMIT, 3]
    targets = [e["target"] for p in audit for e in p]
    assert targets == [f"t-{n}" for n in reversed(range(MAX_LIMIT + 3))]  # newest first, each once
    # An entry made while paging is newer than the first page: not given again, nothing skipped.
    assert [e["target"] for p in out["audit by 400"] for e in p] == targets
    assert [[f["subscription"] for f in p] for p in out["failed"]] == [
        ["sub-0", "sub-1"],
        ["sub-2", "sub-3"],
        ["sub-4"],
    ]
    assert out["too many"].status_code == 422
    assert is_problem(out["made up"], 404, "/audit")["detail"] == WRONG
    # The document says it for every list.
    for path in (
        "/alerts",
        "/subscriptions",
        "/silences",
        "/failed-deliveries",
        "/quarantine",
        "/audit",
        "/tokens",
    ):
        get = out["document"]["paths"][path]["get"]
        params = {p["name"]: p for p in get["parameters"]}
        assert params["limit"]["schema"]["maximum"] == MAX_LIMIT
        assert params["limit"]["schema"]["default"] == DEFAULT_LIMIT
        assert "cursor" in params
        assert "Link" in get["responses"]["200"]["headers"]


def test_the_waste_service_s_lists_page_by_cursor(tmp_path: Path) -> None:
    config = WasteConfig(gtfs=FEED, state=str(tmp_path / "waste.sqlite"))
    service = WasteService(config, TOKEN, load_feed(FEED))
    for n in range(5):
        service.state.failed(n, f"keeper-{n}", "sms", "{}", "HTTP 500")
    for n, day in enumerate(["2026-11-23"] * 5 + ["2026-11-24"] * 2):
        notice = KeeperNotice(NoticeKind.NOTICE, "trip", f"stop-{n}", n, time_s=n)
        assert service.state.claim_notice(notice, day, seq=n)

    async def scenario() -> dict[str, list[list[dict[str, Any]]]]:
        transport = httpx.ASGITransport(app=waste_app(service.engine, TOKEN))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            return {
                "failed": await pages(api, "/failed-deliveries?limit=2"),
                "notices": await pages(api, "/notices?limit=2&day=2026-11-23"),
            }

    found = asyncio.run(scenario())
    assert [[f["contact"] for f in p] for p in found["failed"]] == [
        ["keeper-0", "keeper-1"],
        ["keeper-2", "keeper-3"],
        ["keeper-4"],
    ]
    # Newest first, of the day asked for (the filter kept in the next pages' links).
    assert [[n["stop_id"] for n in p] for p in found["notices"]] == [
        ["stop-4", "stop-3"],
        ["stop-2", "stop-1"],
        ["stop-0"],
    ]


def test_the_demo_s_view_counts_every_page(state: str) -> None:
    """The demo counts bookings and open alerts over every page, not the first one's."""
    app, store, _ = notifier(state)
    subscribe(store, 7)
    with serving(app) as base, httpx.Client(headers=AUTH, timeout=10) as client:
        found = every(client, f"{base}/subscriptions", limit=3)
    assert [s["id"] for s in found] == [f"sub-{n}" for n in range(7)]
