"""Every refusal of the notifier's and the waste service's APIs is an RFC 9457 problem:
`application/problem+json` with type, title, status, detail and instance, and the document
says so for every error it lists."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from linli.cloud.notifier.api import app as notifier_app
from linli.cloud.notifier.channels import Sender
from linli.cloud.notifier.config import NotifierConfig, SmtpConfig
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.guard import MAX_BODY
from linli.cloud.notifier.store import Store
from linli.cloud.scope import Scope
from linli.cloud.tokens import TokenBook
from linli.cloud.waste.api import app as waste_app
from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.service import WasteService
from linli.transit.gtfs import load_feed
from test_waste_service import FEED

TOKEN = "problem-s3cret"  # noqa: S105 (the test's own)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROBLEM = "application/problem+json"
REF = {"$ref": "#/components/schemas/Problem"}


def is_problem(answer: httpx.Response, status: int, path: str) -> dict[str, Any]:
    """The answer is the problem `status` about `path`; its body."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert body["instance"] == path
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


def every_error_is_a_problem(document: dict[str, Any]) -> int:
    """How many error answers the document lists; each is a problem and nothing else."""
    errors = 0
    for path in document["paths"].values():
        for operation in path.values():
            for code, answer in operation["responses"].items():
                if code[0] in "45":
                    errors += 1
                    assert answer["content"] == {
                        PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"title", "status", "detail", "instance"}
    assert set(problem["properties"]) == {"type", "title", "status", "detail", "instance"}
    return errors


async def ask(app: Any, calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api:
        return [await api.request(method, path, **kwargs) for method, path, kwargs in calls]


def test_the_notifier_s_refusals_are_problems(state: str) -> None:
    config = NotifierConfig.model_validate({"state": state})
    notifier = Notifier(config, Store(config.state), Sender(SmtpConfig()), time.time)
    book = TokenBook(config.state)
    reader = book.create("big screen", Scope.READ)
    as_reader = {"Authorization": f"Bearer {reader}"}
    sub = {"id": "ops", "channels": [{"kind": "webhook", "url": "http://127.0.0.1:9/x"}]}
    answers = asyncio.run(
        ask(
            notifier_app(notifier, TOKEN, book),
            [
                ("GET", "/alerts", {}),
                ("POST", "/alerts/0123456789abcdef/ack", {"json": {"by": "x"}, "headers": as_reader}),
                ("PUT", "/subscriptions/ops", {"content": b" " * (MAX_BODY + 1), "headers": AUTH}),
                ("PUT", "/subscriptions/ops", {"json": sub | {"channels": []}, "headers": AUTH}),
                ("PUT", "/subscriptions/other", {"json": sub, "headers": AUTH}),
                ("POST", "/alerts/0123456789abcdef/ack", {"json": {"by": "Wang Wei"}, "headers": AUTH}),
                ("GET", "/no-such-path", {"headers": AUTH}),
                ("DELETE", "/alerts", {"headers": AUTH}),
                ("GET", "/openapi.json", {}),
            ],
        )
    )  # fmt: skip
    nobody, narrow, large, invalid, conflict, missing, unknown, method, document = answers
    is_problem(nobody, 401, "/alerts")
    assert nobody.headers["www-authenticate"] == "Bearer"
    assert is_problem(narrow, 403, "/alerts/0123456789abcdef/ack")["detail"] == (
        "token 'big screen' has scope 'read'; this needs 'ack'"
    )
    assert (
        is_problem(large, 413, "/subscriptions/ops")["detail"] == f"the body may be at most {MAX_BODY} bytes"
    )
    refused = is_problem(invalid, 422, "/subscriptions/ops")
    assert "body.channels" in refused["detail"]
    assert [e["loc"] for e in refused["errors"]] == [["body", "channels"]]  # FastAPI's, kept
    assert (
        is_problem(conflict, 409, "/subscriptions/other")["detail"]
        == "the body's id is 'ops', the path's 'other'"
    )
    assert is_problem(missing, 404, "/alerts/0123456789abcdef/ack")["title"] == "Not Found"
    is_problem(unknown, 404, "/no-such-path")
    is_problem(method, 405, "/alerts")
    assert every_error_is_a_problem(document.json()) >= 20


def test_the_waste_service_s_refusals_are_problems(tmp_path: Path) -> None:
    config = WasteConfig(gtfs=FEED, state=str(tmp_path / "waste.sqlite"))
    service = WasteService(config, TOKEN, load_feed(FEED))
    booking = {"compound": "nowhere", "m3": 2, "earliest": "x"}
    answers = asyncio.run(
        ask(
            waste_app(service.engine, TOKEN),
            [
                ("GET", "/trips", {}),
                ("POST", "/incidents/7/ack", {"headers": AUTH}),
                ("POST", "/bookings", {"json": booking, "headers": AUTH}),
                ("GET", "/bookings/no-such-booking", {"headers": AUTH}),
                ("GET", "/openapi.json", {}),
            ],
        )
    )  # fmt: skip
    nobody, incident, invalid, booking_missing, document = answers
    is_problem(nobody, 401, "/trips")
    assert is_problem(incident, 404, "/incidents/7/ack")["detail"] == "no incident 7"
    refused = is_problem(invalid, 422, "/bookings")
    assert refused["code"] == "contact_invalid"  # the booking page shows its catalog's text for it
    assert refused["errors"]
    assert is_problem(booking_missing, 404, "/bookings/no-such-booking")["code"] == "not_found"
    assert every_error_is_a_problem(document.json()) >= 10
