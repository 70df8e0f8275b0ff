"""The notifier against hostile events and hostile HTTP clients, on real Mosquitto and uvicorn.

No single event, stored row or request may silence the notifier: non-finite numbers are
refused at the door and counted, a stored row that no longer reads back is quarantined,
the token is checked before a body is read, and bodies are bounded.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from linli.catalog.alerts import AlertMessage
from linli.cloud.db import open_state
from linli.cloud.notifier.config import NotifierConfig
from linli.cloud.notifier.service import Service
from linli.demo.servers import LocalServer
from peers import Inbox, Receiver
from support import unique, wait_until
from test_cloud import TOKEN, event, notifier_config, publish

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TOPIC = "linli/alerts/edge-h/gubei-1/station-9"


def hostile(**change: Any) -> str:
    """A well-formed smoke alert's JSON with fields replaced by raw JSON text (NaN is not JSON)."""
    body = json.loads(event("station-9"))
    raw = {k: json.dumps(v) for k, v in body.items()}
    raw.update({k: str(v) for k, v in change.items()})
    return "{" + ",".join(f'"{k}":{v}' for k, v in raw.items()) + "}"


HOSTILE = {
    "value NaN": (hostile(value="NaN", threshold="Infinity"), "not_finite"),
    "threshold -Infinity": (hostile(threshold="-Infinity"), "not_finite"),
    "value 1e400 (infinite as a double)": (hostile(value="1e400"), "not_finite"),
    "a 1 MB site": (hostile(site=json.dumps("x" * 1_000_000)), "too_large"),
    "a 1,000-character device": (hostile(device=json.dumps("d" * 1000)), "invalid"),
    "time in the year 30000": (hostile(time_ms=10**18), "invalid"),
    "not JSON": ("{not json", "malformed"),
}


async def _run(service: Service, body: Any) -> Any:
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await asyncio.wait_for(service.started.wait(), 10)
    try:
        return await body()
    finally:
        stop.set()
        await task


def test_hostile_alert_events_are_refused_counted_and_a_restart_still_delivers(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], state: str
) -> None:
    receiver, _, smtp = peers
    config = notifier_config(state, mosquitto.port, smtp, receiver.url, unique("group"))
    base = f"http://127.0.0.1:{config.api_port}"
    first = Service(config, TOKEN)

    async def flood() -> dict[str, Any]:
        for payload, _ in HOSTILE.values():
            await asyncio.to_thread(publish, mosquitto.port, TOPIC, payload)
        rejected = first.notifier.rejected
        await wait_until(lambda: rejected.total() == len(HOSTILE), 10, "every hostile event refused")
        # Two ticks with them around (counted, so the window is not empty): nothing was stored,
        # so nothing to trip over.
        ticks = first.notifier.ticks
        await wait_until(lambda: first.notifier.ticks >= ticks + 2, 10, "two ticks after the flood")
        async with httpx.AsyncClient(base_url=base, timeout=10) as api:
            return dict((await api.get("/stats", headers=AUTH)).json())

    stats = asyncio.run(_run(first, flood))
    want: dict[str, int] = {}
    for _, reason in HOSTILE.values():
        want[reason] = want.get(reason, 0) + 1
    assert stats["rejected"] == want
    assert not receiver.at("/hook")

    # Restarted on the same state, with nothing of that stored, and a good alert: it is told.
    second = Service(config, TOKEN)
    assert second.notifier.active() == []

    async def good() -> None:
        await asyncio.to_thread(publish, mosquitto.port, TOPIC, event("station-9"))
        await wait_until(lambda: len(receiver.at("/hook")) == 1, 10, "the good alert's message")

    asyncio.run(_run(second, good))
    [told] = receiver.at("/hook")
    assert (told["notice"], told["alert"]["device"]) == ("firing", "station-9")


def test_a_stored_row_that_no_longer_reads_back_is_quarantined_never_fatal(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], state: str
) -> None:
    receiver, _, smtp = peers
    config = notifier_config(state, mosquitto.port, smtp, receiver.url, unique("group"))
    Service(config, TOKEN).store.close()  # the state file, as a running notifier made it
    # What an older notifier stored from a NaN event, a hand-edited row, a broken subscription.
    nan_body = json.loads(event("station-1")) | {"value": None, "threshold": None}
    engine = open_state(config.state)
    with engine.begin() as db:
        add = text("INSERT INTO alert (fingerprint, body, first_s) VALUES (:fp, :body, 0)")
        db.execute(add, {"fp": "00000000000000aa", "body": json.dumps(nan_body)})
        db.execute(add, {"fp": "00000000000000bb", "body": "{truncated"})
        db.execute(text("""INSERT INTO subscription VALUES ('broken', '{"id": "broken", "channels": []}')"""))
    engine.dispose()
    service = Service(config, TOKEN)
    base = f"http://127.0.0.1:{config.api_port}"

    async def scenario() -> list[dict[str, Any]]:
        await asyncio.to_thread(publish, mosquitto.port, TOPIC, event("station-9"))
        await wait_until(lambda: len(receiver.at("/hook")) == 1, 10, "the good alert's message")
        async with httpx.AsyncClient(base_url=base, timeout=10) as api:
            return list((await api.get("/quarantine", headers=AUTH)).json())

    quarantined = asyncio.run(_run(service, scenario))
    assert receiver.at("/hook")[0]["alert"]["device"] == "station-9"
    by_key = {q["key"]: q for q in quarantined}
    assert set(by_key) == {"00000000000000aa", "00000000000000bb", "broken"}
    assert by_key["00000000000000aa"]["source"] == "alert"
    assert "threshold" in by_key["00000000000000aa"]["reason"]
    assert by_key["broken"]["source"] == "subscription"
    assert "channels" in by_key["broken"]["reason"]
    # The bad rows are out of the book, so a third start reads a clean state.
    assert [a.alert.device for a in Service(config, TOKEN).notifier.active()] == ["station-9"]


def raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request's head (and maybe some body) on a raw socket; the status and the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


@pytest.fixture
def api_config(mosquitto: LocalServer, state: str) -> NotifierConfig:
    return notifier_config(state, mosquitto.port, 25, "http://127.0.0.1:9", unique("group"))


def test_the_api_checks_the_token_before_the_body_and_bounds_every_body(
    api_config: NotifierConfig,
) -> None:
    service = Service(api_config, TOKEN)
    port = api_config.api_port
    base = f"http://127.0.0.1:{port}"

    def head(auth: bytes, length: int) -> bytes:
        return (
            b"POST /alerts/0123456789abcdef/ack HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + auth
            + b"Content-Length: "
            + str(length).encode()
            + b"\r\n\r\n"
        )

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        # 200 MB announced, not one byte of it sent: the answer comes anyway.
        out["no token, 200 MB"] = await asyncio.to_thread(raw_request, port, head(b"", 200_000_000))
        auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
        out["token, 200 MB"] = await asyncio.to_thread(raw_request, port, head(auth, 200_000_000))
        out["non-ASCII token"] = await asyncio.to_thread(
            raw_request, port, head("Authorization: Bearer tøken\r\n".encode(), 2), b"{}"
        )
        async with httpx.AsyncClient(base_url=base, timeout=10) as api:
            sub = {"id": "big", "channels": [{"kind": "webhook", "url": "http://127.0.0.1:9/x"}]}

            async def chunks() -> Any:
                for _ in range(40):
                    yield b" " * 10_000  # 400 KB, no Content-Length
                yield json.dumps(sub).encode()

            out["chunked 400 KB"] = (
                await api.put("/subscriptions/big", content=chunks(), headers=AUTH)
            ).status_code
            out["name 300 chars"] = (
                await api.put("/subscriptions/big", json=sub | {"name": "n" * 300}, headers=AUTH)
            ).status_code
            out["no channels"] = (
                await api.put("/subscriptions/big", json=sub | {"channels": []}, headers=AUTH)
            ).status_code
            unknown = await api.put(
                "/subscriptions/big", json=sub | {"escalate_to": ["nobody"]}, headers=AUTH
            )
            out["escalate_to unknown"] = (unknown.status_code, unknown.json())
            out["id mismatch"] = (await api.put("/subscriptions/other", json=sub, headers=AUTH)).json()
            out["scheme in lower case"] = (
                await api.get("/alerts", headers={"Authorization": f"bearer {TOKEN}"})
            ).status_code
            out["stored"] = [s["id"] for s in (await api.get("/subscriptions", headers=AUTH)).json()]
            out["openapi"] = (await api.get("/openapi.json")).json()
        return out

    out = asyncio.run(_run(service, scenario))
    assert out["no token, 200 MB"][0] == 401
    assert b"www-authenticate: bearer" in out["no token, 200 MB"][1].lower()
    assert out["token, 200 MB"][0] == 413
    assert out["non-ASCII token"][0] == 401
    assert out["chunked 400 KB"] == 413
    assert out["name 300 chars"] == 422
    assert out["no channels"] == 422
    assert out["escalate_to unknown"][0] == 409
    assert out["escalate_to unknown"][1]["detail"] == "escalate_to names no subscription: nobody"
    assert out["id mismatch"]["detail"] == "the body's id is 'big', the path's 'other'"
    assert out["scheme in lower case"] == 200
    assert out["stored"] == ["ops"]  # nothing bad was stored
    # The document says all of it: the refusals and the limits.
    doc = out["openapi"]
    ack = doc["paths"]["/alerts/{fingerprint}/ack"]["post"]
    assert {"401", "404", "413", "422"} <= set(ack["responses"])
    schemas = doc["components"]["schemas"]
    assert schemas["Subscription"]["properties"]["name"]["maxLength"] == 200
    assert schemas["Subscription"]["properties"]["channels"]["minItems"] == 1
    assert schemas["Ack"]["properties"]["by"]["maxLength"] == 128


def test_an_alert_stays_one_of_ours_only_when_finite() -> None:
    body = json.loads(event("station-9"))
    AlertMessage.model_validate(body)
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError, match="finite"):
            AlertMessage.model_validate(body | {"value": bad})
