"""Renovation bookings through the running waste service: the API, orders to the truck terminal
over Mosquitto, the driver's answers, the truck's positions and lift, and everyone told (a real
HTTP receiver and a real SMTP server)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import multiprocessing
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from linli.cloud.notifier.config import SmtpConfig
from linli.cloud.waste import dispatch
from linli.cloud.waste import renovation as renovation_module
from linli.cloud.waste.config import BookingRules, SmsGateway, TruckBroker, WasteConfig
from linli.cloud.waste.dispatch import Plan
from linli.cloud.waste.service import WasteService
from linli.demo.recording import on_shift_all_day
from linli.demo.servers import LocalServer, free_port
from linli.transit.extras import Contact
from linli.transit.gtfs import Feed, load_feed
from peers import Inbox, Receiver
from support import LOOPBACK, unique, wait_until
from test_waste_service import local_feed

TOKEN = "waste-s3cret"  # noqa: S105 (the test's own)
TRUCK = "truck-renovation"
ZONE = dt.timezone(dt.timedelta(hours=8))


class Terminal:
    """The renovation truck's terminal: it hears orders and sends answers, positions and lifts."""

    def __init__(self, port: int) -> None:
        self.orders: queue.Queue[dict[str, Any]] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("terminal"))
        self.client.on_message = lambda _c, _u, m: self.orders.put(json.loads(m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"trucks/fleet/{TRUCK}/order", qos=1)
        self.client.loop_start()

    def send(self, kind: str, body: dict[str, Any]) -> None:
        info = self.client.publish(
            f"trucks/fleet/{TRUCK}/{kind}", json.dumps({"ts": round(time.time() * 1000), **body}), qos=1
        )
        info.wait_for_publish(5)

    def order(self) -> dict[str, Any]:
        return self.orders.get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def cli_book(base: str, compound: str) -> subprocess.CompletedProcess[str]:
    now = dt.datetime.now(ZONE)
    window = [
        "--from",
        (now + dt.timedelta(minutes=30)).isoformat(),
        "--to",
        (now + dt.timedelta(hours=4)).isoformat(),
    ]
    return subprocess.run(
        [sys.executable, "-m", "linli.cli", "waste", "book", "--url", base, "--compound", compound,
         "--m3", "1.5", *window, "--name", "Property office", "--email", "office@district.example"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "LINLI_CLOUD_TOKEN": TOKEN},
    )  # fmt: skip


def state_of(service: WasteService, booking_id: str) -> str | None:
    found = service.engine.renovation.bookings.get(booking_id) if service.engine.renovation else None
    return None if found is None else str(found.state)


PHONES = {"gubei-1": "+8613800000001", "hongmei-1": "+8613800000002", "nowhere": "+8613800000009"}


def booking(compound: str, now: dt.datetime, key: str) -> dict[str, Any]:
    """A booking from `now` on: the same arguments, the same booking (its key sent again)."""
    return {
        "compound": compound,
        "bags": 40,
        "earliest": (now + dt.timedelta(minutes=10)).isoformat(),
        "latest": (now + dt.timedelta(hours=3)).isoformat(),
        "contact": {
            "name": f"Property office, {compound}",
            "phone": PHONES[compound],
            "email": f"property.{compound}@district.example",
        },
        "key": key,
    }


def renovation_config(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> tuple[WasteConfig, Feed]:
    """The district's timetable, its renovation truck on shift around the clock from an hour
    ago (whenever the test runs), and a service on a free port telling the test's peers."""
    receiver, _, smtp = peers
    folder = local_feed(tmp_path, receiver.url)
    on_shift_all_day(folder, time.time() - 3600)
    config = WasteConfig(
        broker=TruckBroker(port=mosquitto.port),
        smtp=SmtpConfig(port=smtp, sender="waste@district.example"),
        bookings=BookingRules(sms=SmsGateway(url=f"{receiver.url}/sms")),
        gtfs=folder,
        state=str(tmp_path / "waste.sqlite"),
        api_port=free_port(),
        operator=Contact.model_validate(
            {"name": "operator", "channels": [{"kind": "webhook", "url": f"{receiver.url}/operator"}]}
        ),
        delivery=LOOPBACK,
    )
    return config, load_feed(folder)


def test_a_booking_is_offered_declined_escalated_then_accepted_driven_collected_and_closed(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    receiver, inbox, _ = peers
    config, feed = renovation_config(mosquitto, peers, tmp_path)
    api_port = config.api_port
    gubei, pile = feed.stops["gubei-1"], feed.stops["hongmei-1"]

    async def scenario() -> dict[str, Any]:
        service = WasteService(config, TOKEN, feed)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await asyncio.wait_for(service.started.wait(), 15)
        terminal = await asyncio.to_thread(Terminal, mosquitto.port)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        base = f"http://127.0.0.1:{api_port}"
        now = dt.datetime.now(ZONE)
        out: dict[str, Any] = {}
        try:
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as api:
                # The first: the only driver declines, and the operating company is asked.
                first = await api.post("/bookings", json=booking("gubei-1", now, "k1"))
                again = await api.post("/bookings", json=booking("gubei-1", now, "k1"))
                out["codes"] = (
                    first.status_code,
                    again.status_code,
                    again.json()["id"] == first.json()["id"],
                )
                b1 = first.json()["id"]
                order = await asyncio.to_thread(terminal.order)
                out["order"] = order
                await asyncio.to_thread(terminal.send, "order_reply", {"booking": b1, "accept": False})
                await wait_until(lambda: bool(receiver.at("/operator")), 10, "the escalation")
                out["b1"] = (await api.get(f"/bookings/{b1}")).json()
                # The second: accepted, driven to, collected, closed.
                b2 = (await api.post("/bookings", json=booking("hongmei-1", now, "k2"))).json()["id"]
                while (order := await asyncio.to_thread(terminal.order))["booking"] != b2:
                    pass
                await asyncio.to_thread(terminal.send, "order_reply", {"booking": b2, "accept": True})
                await asyncio.to_thread(
                    terminal.send, "location", {"lat": gubei.lat, "lon": gubei.lon, "speed": 25.0}
                )
                await asyncio.to_thread(
                    terminal.send, "location", {"lat": pile.lat, "lon": pile.lon, "speed": 0.0}
                )
                await wait_until(lambda: state_of(service, b2) == "arrived", 10, "arrived")
                out["late_cancel"] = (await api.post(f"/bookings/{b2}/cancel")).status_code
                await asyncio.to_thread(terminal.send, "lift", {"stop": "", "bins": 1, "collected_kg": 412.5})
                await asyncio.to_thread(
                    terminal.send, "location", {"lat": gubei.lat, "lon": gubei.lon, "speed": 25.0}
                )
                await wait_until(lambda: state_of(service, b2) == "closed", 10, "closed")
                out["b2"] = (await api.get(f"/bookings/{b2}")).json()
                out["refused"] = (await api.post("/bookings", json={**booking("nowhere", now, "k3")})).json()
                out["page"] = (await httpx.AsyncClient().get(f"{base}/book")).status_code
                out["stats"] = (await api.get("/stats")).json()
                out["metrics"] = (await api.get("/metrics")).text
                out["health"] = (await api.get("/health")).json()
                out["cli"] = [
                    await asyncio.to_thread(cli_book, base, compound) for compound in ("nowhere", "yili-1")
                ]
                await service.engine.deliveries.drain(10)
        finally:
            await asyncio.to_thread(terminal.close)
            stop.set()
            await task
        return out

    out = asyncio.run(scenario())
    assert out["codes"] == (201, 200, True)  # the same key books once
    assert out["order"]["compound"] == "gubei-1"
    assert out["order"]["volume_m3"] == 2.0  # 40 bags
    assert [t["state"] for t in out["b1"]["trail"]] == ["requested", "offered", "requested"]
    assert out["b1"]["trail"][2]["by"] == f"driver of {TRUCK}"
    [escalated] = receiver.at("/operator")
    assert out["b1"]["id"] in json.dumps(escalated)
    assert [t["state"] for t in out["b2"]["trail"]] == [
        "requested", "offered", "accepted", "en_route", "arrived", "collected", "closed",
    ]  # fmt: skip
    assert out["b2"]["collected_kg"] == 412.5
    assert out["late_cancel"] == 409  # the truck is already there
    assert "no compound 'nowhere'" in out["refused"]["detail"]
    assert out["page"] == 200  # the page itself needs no token
    # /metrics says what /stats says.
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(out["metrics"])
        for s in family.samples
    }
    stats = out["stats"]
    assert samples["linli_waste_messages_total", ()] == stats["received"]
    assert samples["linli_waste_handled_total", (("kind", "order_reply"),)] == stats["handled"]["order_reply"]
    assert samples["linli_waste_store_pending_lines", ()] == stats["store_pending"]
    assert out["health"]["messages"] == stats["received"]
    refused, booked = out["cli"]
    assert (refused.returncode, booked.returncode) == (1, 0), (refused.stderr, booked.stderr)
    assert "no compound 'nowhere'" in refused.stderr
    assert booked.stdout.startswith("booking ")
    told = [p["booking"]["state"] for p in receiver.at("/sms") if p["to"] == PHONES["hongmei-1"]]
    assert told == ["requested", "offered", "accepted", "en_route", "arrived", "collected", "closed"]
    mails = [m for m in inbox.messages if "hongmei-1" in m["To"]]
    assert len(mails) == len(told)
    # In Chinese, naming the bin room as people do, with the truck's scale reading.
    letters = [bytes(m.get_payload(decode=True)).decode() for m in mails]
    assert all(letter.startswith("装修垃圾预约：虹梅小区1号垃圾房") for letter in letters), letters
    assert any("约412公斤" in letter or "约413公斤" in letter for letter in letters), letters


class HeldSolver:
    """Every plan's solve waits in `solve` until the test lets it go (`release`), and says when
    it starts (`started`). Patched in before the service starts, so the planning process forked
    then has it too; on a service that solves on its event loop it holds the loop, at most
    HOLD_S, so that such a test fails rather than hangs."""

    HOLD_S = 20.0

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fork = multiprocessing.get_context("fork")
        self._started = fork.Semaphore(0)
        self._permits = fork.Semaphore(0)
        real = dispatch.plan

        def held(*args: Any, **kwargs: Any) -> Plan:
            self._started.release()
            self._permits.acquire(timeout=self.HOLD_S)
            return real(*args, **kwargs)

        monkeypatch.setattr(dispatch, "plan", held)
        monkeypatch.setattr(renovation_module, "plan", held, raising=False)  # where it is called before

    def started(self) -> bool:
        return self._started.acquire(timeout=10)

    def release(self, solves: int = 1) -> None:
        for _ in range(solves):
            self._permits.release()


def while_solving(steps: Callable[[dict[str, Any]], None]) -> Callable[[], dict[str, Any]]:
    """`steps` in a thread of their own, while the event loop may be held: what they found,
    or `timed_out` when the service could not answer meanwhile."""

    def run() -> dict[str, Any]:
        found: dict[str, Any] = {}
        try:
            steps(found)
        except httpx.TimeoutException as exc:
            found["timed_out"] = repr(exc)
        return found

    return run


@dataclass
class Held:
    """A service's config and timetable, and its solves held (`solver`)."""

    config: WasteConfig
    feed: Feed
    solver: HeldSolver

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.config.api_port}"


@pytest.fixture
def held(
    mosquitto: LocalServer,
    peers: tuple[Receiver, Inbox, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Held:
    config, feed = renovation_config(mosquitto, peers, tmp_path)
    return Held(config, feed, HeldSolver(monkeypatch))


@contextlib.asynccontextmanager
async def serving(service: WasteService, broker_port: int) -> AsyncIterator[Terminal]:
    """The service running, and the renovation truck's terminal."""
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await asyncio.wait_for(service.started.wait(), 15)
    terminal = await asyncio.to_thread(Terminal, broker_port)
    try:
        yield terminal
    finally:
        await asyncio.to_thread(terminal.close)
        stop.set()
        await task


@contextlib.asynccontextmanager
async def running(service: WasteService, held: Held) -> AsyncIterator[Terminal]:
    """The service running, and the renovation truck's terminal; every solve let go at the end."""
    async with serving(service, held.config.broker.port) as terminal:
        try:
            yield terminal
        finally:
            held.solver.release(5)


def test_a_truck_s_message_is_handled_while_a_plan_is_solved_and_the_plan_is_applied_after(
    held: Held, monkeypatch: pytest.MonkeyPatch
) -> None:
    gubei = held.feed.stops["gubei-1"]
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario() -> dict[str, Any]:
        service = WasteService(held.config, TOKEN, held.feed)
        handled = threading.Event()
        take = service.engine.take

        def taking(topic: str, payload: bytes) -> None:
            take(topic, payload)
            if topic.endswith("/location"):
                handled.set()

        monkeypatch.setattr(service.engine, "take", taking)
        async with running(service, held) as terminal:

            def steps(found: dict[str, Any]) -> None:
                found["solving"] = held.solver.started()
                terminal.send("location", {"lat": gubei.lat, "lon": gubei.lon, "speed": 25.0})
                found["handled"] = handled.wait(5)  # the solve is still held
                held.solver.release()

            meanwhile = asyncio.create_task(asyncio.to_thread(while_solving(steps)))
            async with httpx.AsyncClient(base_url=held.base, headers=headers, timeout=30) as api:
                booked = (
                    await api.post("/bookings", json=booking("gubei-1", dt.datetime.now(ZONE), "k1"))
                ).json()
                out = await meanwhile
                out["booked"] = booked
                out["order"] = await asyncio.to_thread(terminal.order)
                out["after"] = (await api.get(f"/bookings/{booked['id']}")).json()
        return out

    out = asyncio.run(scenario())
    assert out["solving"]
    assert out["handled"], "the truck's message waited for the plan"
    assert out["booked"]["state"] == "requested"  # answered before the plan is solved
    assert out["order"]["booking"] == out["booked"]["id"]  # the plan from the worker, applied
    assert out["after"]["state"] == "offered"
    assert out["after"]["predicted"] is not None


def test_a_booking_cancelled_while_its_plan_is_solved_is_not_planned_nor_offered(held: Held) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def steps(found: dict[str, Any]) -> None:
        with httpx.Client(base_url=held.base, headers=headers, timeout=5) as api:
            found["solving"] = held.solver.started()  # the plan with the booking
            [first] = api.get("/bookings").json()
            found["cancelled"] = api.post(f"/bookings/{first['id']}/cancel").json()
            held.solver.release()
            # The next plan, asked for by the cancellation, starts once the first is applied.
            found["next"] = held.solver.started()
            found["view"] = api.get("/renovation").json()
            found["first"] = api.get(f"/bookings/{first['id']}").json()
            held.solver.release()

    async def scenario() -> dict[str, Any]:
        service = WasteService(held.config, TOKEN, held.feed)
        async with running(service, held) as terminal:
            meanwhile = asyncio.create_task(asyncio.to_thread(while_solving(steps)))
            async with httpx.AsyncClient(base_url=held.base, headers=headers, timeout=30) as api:
                await api.post("/bookings", json=booking("gubei-1", dt.datetime.now(ZONE), "k1"))
                out = await meanwhile
                held.solver.release(5)  # and from here on, every solve runs freely
                second = (
                    await api.post("/bookings", json=booking("hongmei-1", dt.datetime.now(ZONE), "k2"))
                ).json()
                orders = [await asyncio.to_thread(terminal.order)]
                while orders[-1]["booking"] != second["id"]:
                    orders.append(await asyncio.to_thread(terminal.order))
                out["orders"] = orders
        return out

    out = asyncio.run(scenario())
    assert "timed_out" not in out, out["timed_out"]
    assert (out["solving"], out["next"]) == (True, True)
    first = out["cancelled"]["id"]
    assert out["cancelled"]["state"] == "cancelled"
    # The plan solved with the booking was applied without it: not in a round, not offered.
    assert [b["booking"] for t in out["view"]["trucks"] for b in t["round"]] == []
    assert [t["state"] for t in out["first"]["trail"]] == ["requested", "cancelled"]
    assert out["first"]["predicted"] is None
    assert first not in [o["booking"] for o in out["orders"]]


def test_a_booking_for_later_is_planned_but_offered_only_when_its_time_comes(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    """Offered at once, a booking for the afternoon sent the driver off now: collected hours
    before the requester's window (`OFFER_AHEAD_S`)."""
    config, feed = renovation_config(mosquitto, peers, tmp_path)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = f"http://127.0.0.1:{config.api_port}"
    now = dt.datetime.now(ZONE)
    later = booking("gubei-1", now + dt.timedelta(hours=3), "later")  # its window opens in 3 h 10 min

    async def scenario() -> dict[str, Any]:
        service = WasteService(config, TOKEN, feed)
        async with (
            serving(service, mosquitto.port) as terminal,
            httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as api,
        ):
            first = (await api.post("/bookings", json=later)).json()
            soon = (await api.post("/bookings", json=booking("hongmei-1", now, "soon"))).json()
            # Plans are made from the state as it is: the one that offers `soon` has both.
            order = await asyncio.to_thread(terminal.order)
            return {
                "ids": (first["id"], soon["id"]),
                "order": order,
                "later": (await api.get(f"/bookings/{first['id']}")).json(),
            }

    out = asyncio.run(scenario())
    later_id, soon_id = out["ids"]
    assert out["order"]["booking"] == soon_id  # the first order the driver hears, not `later_id`'s
    assert out["later"]["id"] == later_id
    assert out["later"]["state"] == "requested"
    opens_ms = dt.datetime.fromisoformat(later["earliest"]).timestamp() * 1000
    # Planned in its window (the solver counts whole seconds from the plan's time).
    assert out["later"]["predicted_ms"] >= opens_ms - 1000


def test_a_stopped_service_says_what_it_did_and_what_is_left(
    mosquitto: LocalServer,
    peers: tuple[Receiver, Inbox, int],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ctrl-C (the stop event) ends with one line: messages taken, notices, what is left."""
    config, feed = renovation_config(mosquitto, peers, tmp_path)
    gubei = feed.stops["gubei-1"]

    async def scenario() -> int:
        service = WasteService(config, TOKEN, feed)
        async with serving(service, mosquitto.port) as terminal:
            await asyncio.to_thread(
                terminal.send, "location", {"lat": gubei.lat, "lon": gubei.lon, "speed": 20.0}
            )
            await wait_until(lambda: service.engine.received == 1, 10, "the truck's message taken")
        return service.engine.received

    with caplog.at_level(logging.INFO, logger="linli.cloud.waste.service"):
        assert asyncio.run(scenario()) == 1
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waste: stopped;")]
    assert len(said) == 1
    assert re.fullmatch(
        r"waste: stopped; 1 truck messages taken, 0 notices claimed, 0 waiting for the state, "
        r"0 deliveries recorded as failed, \d+ store lines kept for the next start",
        said[0],
    ), said
