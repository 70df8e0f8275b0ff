"""Who may do what on the waste API, and where a booking's news may go (issue 29), against the
running waste service: Mosquitto, a real HTTP receiver (the SMS gateway, the WeCom relay) and
a real SMTP server.

A booking link is a `book` token bound to an office and its compounds: it books there, sees and
cancels its own office's bookings only. A requester gives a phone, an e-mail or a WeCom id; the
operator's gateways deliver, and a request naming a URL or a topic is refused.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import queue
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from aiosmtpd.controller import Controller
from paho.mqtt.enums import CallbackAPIVersion

from linli.cloud.notifier.config import SmtpConfig
from linli.cloud.scope import Scope
from linli.cloud.tokens import TokenBook
from linli.cloud.waste.config import BookingRules, SmsGateway, TruckBroker, WasteConfig, WecomApp
from linli.cloud.waste.service import WasteService
from linli.cloud.waste.state import WasteState
from linli.demo.recording import on_shift_all_day
from linli.demo.servers import LocalServer, free_port
from linli.transit.gtfs import load_feed
from peers import Inbox, Receiver
from support import LOOPBACK, linli, unique, wait_for, waste_in_thread

FEED = Path(__file__).resolve().parents[3] / "deploy" / "gtfs" / "hongqiao"
ENV_TOKEN = "waste-env-s3cret"  # noqa: S105 (the test's own)
ZONE = dt.timezone(dt.timedelta(hours=8))
OPS_TOPIC = "linli/notices/ops"


@dataclass
class Running:
    base: str
    port: int
    tokens: dict[str, str]  # who -> token
    receiver: Receiver
    inbox: Inbox
    service: WasteService
    heard: queue.Queue[tuple[str, bytes]]  # every MQTT message on the broker


@pytest.fixture(scope="module")
def running(mosquitto: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("booking-access")
    folder = tmp / "gtfs"
    shutil.copytree(FEED, folder)
    on_shift_all_day(folder, time.time() - 3600)
    receiver, inbox = Receiver(), Inbox()
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    state = str(tmp / "waste.sqlite")
    book = TokenBook(WasteState(state).engine)
    tokens = {
        "office-a": book.create(
            "gubei office link", Scope.BOOK, office="Gubei office", compounds=["gubei-1"]
        ),
        "office-b": book.create("hongmei office link", Scope.BOOK, compounds=["hongmei-1", "hongmei-2"]),
        "read": book.create("screen", Scope.READ),
        "ack": book.create("duty officer", Scope.ACK),
        "admin": book.create("dispatcher", Scope.ADMIN),
        "revoked": book.create("old link", Scope.BOOK, compounds=["gubei-1"]),
        "env": ENV_TOKEN,
    }
    book.revoke("old link")
    book.close()
    api_port = free_port()
    config = WasteConfig(
        broker=TruckBroker(port=mosquitto.port),
        gtfs=folder,
        state=state,
        api_port=api_port,
        smtp=SmtpConfig(port=smtp_port, sender="waste@district.example"),
        bookings=BookingRules(
            max_ahead_days=14,
            max_window_h=48,
            sms=SmsGateway(url=f"{receiver.url}/sms"),
            wecom=WecomApp(url=f"{receiver.url}/wecom", agent_id=1000002),
        ),
        delivery=LOOPBACK,
    )
    heard: queue.Queue[tuple[str, bytes]] = queue.Queue()
    spy = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("spy"))
    spy.on_message = lambda _c, _u, m: heard.put((m.topic, bytes(m.payload)))
    spy.connect("127.0.0.1", mosquitto.port)
    spy.subscribe("#", qos=1)
    spy.loop_start()
    service = WasteService(config, ENV_TOKEN, load_feed(folder))
    try:
        with waste_in_thread(service):
            yield Running(f"http://127.0.0.1:{api_port}", api_port, tokens, receiver, inbox, service, heard)
    finally:
        spy.disconnect()
        spy.loop_stop()
        smtp.stop()
        receiver.close()


def call(run: Running, who: str | None, method: str, path: str, body: Any = None) -> httpx.Response:
    headers = {} if who is None else {"Authorization": f"Bearer {run.tokens.get(who, who)}"}
    return httpx.request(method, run.base + path, headers=headers, json=body, timeout=10)


def refusals(run: Running) -> dict[str, int]:
    """The booking requests refused so far, by reason, as `/stats` says."""
    counts: dict[str, int] = call(run, "read", "GET", "/stats").json()["bookings_refused"]
    return counts


def booking(compound: str, key: str, **changes: Any) -> dict[str, Any]:
    now = dt.datetime.now(ZONE)
    return {
        "compound": compound,
        "bags": 20,
        "earliest": (now + dt.timedelta(minutes=10)).isoformat(),
        "latest": (now + dt.timedelta(hours=3)).isoformat(),
        "contact": {"name": f"Property office, {compound}", "email": f"property.{compound}@district.example"},
        "note": f"the pile of {key}",
        "key": key,
    } | changes


# What each scope gets: book, read, ack, admin (a 404 is the endpoint's own: nothing by that id).
TABLE: list[tuple[str, str, Any, tuple[int, int, int, int]]] = [
    ("GET", "/trips", None, (403, 200, 200, 200)),
    ("GET", "/notices", None, (403, 200, 200, 200)),
    ("GET", "/rollups", None, (403, 200, 200, 200)),
    ("GET", "/incidents", None, (403, 200, 200, 200)),
    ("GET", "/failed-deliveries", None, (403, 200, 200, 200)),
    ("GET", "/gtfs-rt", None, (403, 200, 200, 200)),
    ("GET", "/metrics", None, (403, 200, 200, 200)),
    ("GET", "/health", None, (403, 200, 200, 200)),
    ("GET", "/stats", None, (403, 200, 200, 200)),
    ("GET", "/renovation", None, (403, 200, 200, 200)),
    ("POST", "/incidents/7/ack", None, (403, 403, 404, 404)),
    ("POST", "/trips/t-1/stops/gubei-1/skip", None, (403, 403, 403, 404)),
    ("POST", "/trips/t-1/stops/gubei-1/defer", None, (403, 403, 403, 404)),
    ("POST", "/trips/t-1/replacement", {"truck": "truck-spare"}, (403, 403, 403, 404)),
    ("GET", "/compounds", None, (200, 200, 200, 200)),
    ("GET", "/bookings", None, (200, 200, 200, 200)),
    ("GET", "/bookings/no-such", None, (404, 404, 404, 404)),
    ("POST", "/bookings/no-such/cancel", None, (404, 403, 403, 404)),
    ("POST", "/bookings", "gubei-1", (201, 403, 403, 201)),
]


@pytest.mark.parametrize(("method", "path", "body", "codes"), TABLE, ids=[f"{m} {p}" for m, p, _, _ in TABLE])
def test_each_endpoint_answers_each_scope_as_its_scope_allows(
    running: Running, method: str, path: str, body: Any, codes: tuple[int, ...]
) -> None:
    got: dict[str | None, int] = {}
    for who in (None, "not-a-token", "revoked", "office-a", "read", "ack", "admin", "env"):
        sent = booking(body, unique("key")) if isinstance(body, str) else body
        got[who] = call(running, who, method, path, sent).status_code
    expected: dict[str | None, int] = {None: 401, "not-a-token": 401, "revoked": 401}
    expected |= dict(zip(("office-a", "read", "ack", "admin"), codes, strict=True))
    expected["env"] = codes[3]  # $LINLI_CLOUD_TOKEN stays an admin token
    assert got == expected


def test_the_booking_page_itself_needs_no_token(running: Running) -> None:
    assert call(running, None, "GET", "/book").status_code == 200


def test_a_link_books_at_its_compounds_and_sees_and_cancels_its_own_office_s_bookings_only(
    running: Running,
) -> None:
    mine = call(running, "office-a", "POST", "/bookings", booking("gubei-1", unique("a")))
    assert mine.status_code == 201, mine.text
    a_id = mine.json()["id"]
    theirs = call(
        running, "office-b", "POST", "/bookings", booking("hongmei-1", unique("b"), note="code 4711")
    )
    assert theirs.status_code == 201, theirs.text
    b_id = theirs.json()["id"]
    # Not at another office's compound.
    elsewhere = call(running, "office-a", "POST", "/bookings", booking("hongmei-1", unique("a")))
    assert (elsewhere.status_code, "gubei-1 only" in elsewhere.text) == (403, True)
    # Office A's link: its own booking only, nothing of B's, not even by its id.
    listed = call(running, "office-a", "GET", "/bookings")
    assert a_id in [b["id"] for b in listed.json()]
    assert {b["compound"] for b in listed.json()} == {"gubei-1"}  # the table's bookings by this link too
    assert "code 4711" not in listed.text
    assert "hongmei-1" not in listed.text
    assert call(running, "office-a", "GET", f"/bookings/{b_id}").status_code == 404
    assert call(running, "office-a", "POST", f"/bookings/{b_id}/cancel").status_code == 404
    assert running.service.engine.renovation is not None
    assert str(running.service.engine.renovation.bookings.get(b_id).state) != "cancelled"  # type: ignore[union-attr]
    assert [c["id"] for c in call(running, "office-a", "GET", "/compounds").json()] == ["gubei-1"]
    # Its own: seen with its trail (who booked it: the link), and cancelled.
    own = call(running, "office-a", "GET", f"/bookings/{a_id}").json()
    assert own["trail"][0]["by"] == "gubei office link"
    cancelled = call(running, "office-a", "POST", f"/bookings/{a_id}/cancel")
    assert (cancelled.status_code, cancelled.json()["state"]) == (200, "cancelled")
    # The district's screen sees both; the other office's link sees its own.
    assert {a_id, b_id} <= {b["id"] for b in call(running, "read", "GET", "/bookings").json()}
    assert [b["id"] for b in call(running, "office-b", "GET", "/bookings").json()] == [b_id]  # none other


@pytest.mark.parametrize(
    "contact",
    [
        {"name": "x", "channels": [{"kind": "webhook", "url": "http://127.0.0.1:{port}/admin/delete?all=1"}]},
        {"name": "x", "channels": [{"kind": "mqtt", "topic": OPS_TOPIC}]},
        {"name": "x", "email": "x@district.example", "url": "http://127.0.0.1:{port}/admin/delete?all=1"},
        {"name": "x", "email": "x@district.example", "topic": OPS_TOPIC},
        {"name": "x", "phone": "http://127.0.0.1:{port}/admin/delete?all=1"},
        {"name": "x", "wecom": "trucks/fleet/truck-renovation/order"},
    ],
    ids=["webhook channel", "mqtt channel", "url", "topic", "url as phone", "topic as wecom id"],
)
def test_a_request_naming_a_url_or_a_topic_is_refused_and_nothing_is_sent_there(
    running: Running, contact: dict[str, Any]
) -> None:
    port = running.receiver.url.rsplit(":", 1)[1]
    named = json.loads(json.dumps(contact).replace("{port}", port))
    key = unique("evil")
    before = refusals(running)
    refused = call(running, "admin", "POST", "/bookings", booking("gubei-1", key, contact=named))
    assert refused.status_code == 422, refused.text
    assert refusals(running) == before | {"invalid": before.get("invalid", 0) + 1}  # counted, by reason
    # A booking that is told, after it: its SMS arriving shows the service has sent what it would.
    phone = "+8613800138000"
    told = call(
        running,
        "admin",
        "POST",
        "/bookings",
        booking("gubei-1", unique("ok"), contact={"name": "ok", "phone": phone}),
    )
    assert told.status_code == 201, told.text
    sms = running.receiver.at
    wait_for(
        lambda: any(p["booking"]["booking"] == told.json()["id"] for p in sms("/sms")), "the SMS after it"
    )
    assert [p for p, _ in running.receiver.posts if p.startswith("/admin")] == []
    heard = []
    while not running.heard.empty():
        heard.append(running.heard.get_nowait())
    assert [t for t, _ in heard if t == OPS_TOPIC] == []
    assert all(b"requested" not in payload for t, payload in heard if t.endswith("/order"))
    assert all(key not in json.dumps(b.to_json()) for b in running.service.engine.renovation.bookings.all())  # type: ignore[union-attr]


def test_the_requester_is_told_through_the_operator_s_sms_gateway_mail_and_wecom_app(
    running: Running,
) -> None:
    contact = {"name": "Ms Li", "phone": "+8613900139000", "email": "li@district.example", "wecom": "LiNa"}
    made = call(running, "admin", "POST", "/bookings", booking("gubei-1", unique("ways"), contact=contact))
    assert made.status_code == 201, made.text
    wait_for(
        lambda: bool(
            running.receiver.at("/wecom")
            and any(p["to"] == "+8613900139000" for p in running.receiver.at("/sms"))
            and any(m["To"] == "li@district.example" for m in running.inbox.messages)
        ),
        "told three ways",
    )
    sms = next(p for p in running.receiver.at("/sms") if p["to"] == "+8613900139000")
    # One SMS in Chinese, naming the bin room as people do (the booking's id is for machines).
    assert sms["text"] == "已收到您在古北小区1号垃圾房的装修垃圾清运预约，正在安排车辆。", sms
    assert sms["booking"]["booking"] == made.json()["id"]
    assert sms["booking"]["locale"] == "zh-CN"
    wecom = running.receiver.at("/wecom")[0]
    assert (wecom["touser"], wecom["agentid"], wecom["msgtype"]) == ("LiNa", 1000002, "text")


def test_the_same_key_with_other_content_is_a_conflict_naming_the_key(running: Running) -> None:
    key = unique("dup")
    body = booking("gubei-1", key)
    first = call(running, "admin", "POST", "/bookings", body)
    again = call(running, "admin", "POST", "/bookings", body)
    other = call(running, "admin", "POST", "/bookings", body | {"bags": 90})
    assert first.status_code == 201
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    assert other.status_code == 409
    assert refusals(running)["key_conflict"] >= 1
    assert f"key '{key}'" in other.json()["detail"]


@pytest.mark.parametrize(
    ("earliest", "latest", "bound"),
    [
        ("2099-06-01T09:00:00+08:00", "2099-06-01T12:00:00+08:00", "bookings.max_ahead_days allows 14"),
        ("9999-12-31T09:00:00+08:00", "9999-12-31T12:00:00+08:00", "bookings.max_ahead_days allows 14"),
        (None, None, "bookings.max_window_h allows 48 h"),
    ],
    ids=["2099", "9999-12-31", "a year wide"],
)
def test_a_window_too_far_ahead_or_too_wide_is_refused_naming_the_bound(
    running: Running, earliest: str | None, latest: str | None, bound: str
) -> None:
    body = booking("gubei-1", unique("far"))
    if earliest is None:  # a year wide, ending within the days allowed
        end = dt.datetime.now(ZONE) + dt.timedelta(hours=3)
        body |= {"earliest": (end - dt.timedelta(days=365)).isoformat(), "latest": end.isoformat()}
    else:
        body |= {"earliest": earliest, "latest": latest}
    refused = call(running, "admin", "POST", "/bookings", body)
    assert refused.status_code == 422
    assert bound in refused.json()["detail"]


def test_a_nan_coordinate_is_refused_and_the_connection_goes_on(running: Running) -> None:
    body = json.dumps(booking("gubei-1", unique("nan"), lat=31.2, lon=121.4)).replace("31.2", "NaN")
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    headers = {"Authorization": f"Bearer {running.tokens['admin']}", "Content-Type": "application/json"}
    try:
        connection.request("POST", "/bookings", body=body, headers=headers)
        refused = connection.getresponse()
        errors = json.loads(refused.read())["errors"]  # the problem's, as FastAPI says them
        connection.request("GET", "/compounds", headers=headers)  # the same connection, kept alive
        after = connection.getresponse()
        after.read()
    finally:
        connection.close()
    assert refused.status == 422
    assert any(d["loc"][-1] == "lat" for d in errors)
    assert after.status == 200


@pytest.mark.servers
def test_waste_token_commands_make_list_and_revoke_booking_links_in_the_waste_state(tmp_path: Path) -> None:
    config = tmp_path / "waste.toml"
    config.write_text(f'gtfs = "{FEED}"\nstate = "waste.sqlite"\n', encoding="utf-8")
    args = ("waste", "token", "create", "--config", str(config), "--scope", "book", "--name", "gubei link")
    made = linli(*args, "--office", "Gubei office", "--compound", "gubei-1", "--compound", "gubei-2")
    assert made.returncode == 0, made.stderr
    unbound = linli(*args[:-1], "another link")
    listed = linli("waste", "token", "list", "--config", str(config))
    book = TokenBook(WasteState(str(tmp_path / "waste.sqlite")).engine)
    try:
        holder = book.holder(made.stdout.strip().encode())
        revoked = linli("waste", "token", "revoke", "--config", str(config), "--name", "gubei link")
        after = book.holder(made.stdout.strip().encode())
    finally:
        book.close()
    assert holder is not None
    assert (holder.scope, holder.office) == (Scope.BOOK, "Gubei office")
    assert holder.compounds == frozenset({"gubei-1", "gubei-2"})
    assert (unbound.returncode, "a book token needs the compounds" in unbound.stderr) == (2, True)
    assert listed.stdout.startswith("gubei link\tbook\tlive\t")
    assert revoked.returncode == 0
    assert after is None  # refused from now on
