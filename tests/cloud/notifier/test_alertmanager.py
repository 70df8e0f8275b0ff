"""Alertmanager's webhook format (issue 35). Out: a channel of kind `alertmanager` posts each
message as Alertmanager posts a group to a webhook receiver (JSON `version` 4), so that existing
receivers (prometheus-webhook-dingtalk and the like) work unchanged. In: `POST /alertmanager`
takes Alertmanager's webhook (an `ack` token), each alert told like an edge's.

The notifier's real state (SQLite and PostgreSQL) and sender, to a real HTTP receiver; the
payload checked against the fields and types Alertmanager documents for `webhook_config`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from alertflow import Hook
from linli.catalog.channels import ChannelKind, HttpChannel
from linli.cloud.notifier.channels import Sender
from linli.cloud.notifier.config import DeliveryConfig, NotifierConfig, SmtpConfig, Subscription
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.store import Store
from linli.demo.servers import LocalServer
from support import wait_for
from test_grouping import OPS, offline
from test_notifier import Clock, at, run
from test_notifier_db_faults import get
from test_notifier_tokens import call, create
from test_storm import one_notifier

# Alertmanager's webhook payload, as its configuration reference documents it (version 4).
GROUP_FIELDS = {
    "version": str, "groupKey": str, "truncatedAlerts": int, "status": str, "receiver": str,
    "groupLabels": dict, "commonLabels": dict, "commonAnnotations": dict, "externalURL": str, "alerts": list,
}  # fmt: skip
ALERT_FIELDS = {
    "status": str, "labels": dict, "annotations": dict, "startsAt": str, "endsAt": str,
    "generatorURL": str, "fingerprint": str,
}  # fmt: skip


@pytest.fixture
def book(state: str) -> Iterator[Store]:
    with contextlib.closing(Store(state)) as store:
        yield store


def shaped(payload: dict[str, Any]) -> None:
    """Fails unless `payload` has exactly Alertmanager's documented fields, of their types."""
    assert {k: type(v) for k, v in payload.items()} == GROUP_FIELDS
    for alert in payload["alerts"]:
        assert {k: type(v) for k, v in alert.items()} == ALERT_FIELDS
        assert all(isinstance(v, str) for v in [*alert["labels"].values(), *alert["annotations"].values()])
        assert datetime.fromisoformat(alert["startsAt"]).utcoffset() is not None  # RFC 3339, zoned


def test_a_group_goes_out_as_alertmanager_s_webhook_and_its_all_clear_too(book: Store) -> None:
    hook = Hook("127.0.0.1")
    clock = Clock(at("10:00"))
    channel = HttpChannel(kind=ChannelKind.ALERTMANAGER, url=hook.url)
    book.put_subscription(Subscription(id="ops", channels=[channel]))
    delivery = DeliveryConfig(allow_private=True)
    config = NotifierConfig(delivery=delivery, group_wait_s=5, api_url="https://linli.example.com")
    n = Notifier(config, book, Sender(SmtpConfig(), policy=delivery), clock)
    try:
        run(n, clock, [(0, offline(1)), (0, offline(2)), (0, offline(3)), (6, None)])
        run(n, clock, [(1, offline(i, "resolved")) for i in (1, 2, 3)])  # the last: the all-clear
    finally:
        hook.close()
    assert len(hook.got) == 2
    firing, cleared = (body for body, _ in hook.got)
    shaped(firing)
    shaped(cleared)
    assert (firing["version"], firing["status"], firing["receiver"]) == ("4", "firing", "ops")
    assert firing["groupLabels"] == {"site": "ronghua-1", "alertname": "charger.offline"}
    assert firing["groupKey"] == '{}:{alertname="charger.offline", site="ronghua-1"}'
    assert firing["externalURL"] == "https://linli.example.com"
    assert firing["commonLabels"] == {
        "alertname": "charger.offline", "severity": "critical", "site": "ronghua-1", "kind": "charger",
        "edge": "e1",
    }  # fmt: skip
    assert sorted(a["labels"]["device"] for a in firing["alerts"]) == ["station-1", "station-2", "station-3"]
    first = firing["alerts"][0]
    assert first["status"] == "firing"
    assert first["endsAt"] == "0001-01-01T00:00:00Z"  # Alertmanager's "not ended"
    assert first["startsAt"].endswith("+08:00")  # the subscription's zone
    assert "荣华居民区" in first["annotations"]["description"]  # names people know, in zh-CN
    assert first["generatorURL"] == f"https://linli.example.com/alerts?fingerprint={first['fingerprint']}"
    assert first["fingerprint"] == offline(int(first["labels"]["device"][-1])).fingerprint
    assert cleared["status"] == "resolved"
    assert {a["status"] for a in cleared["alerts"]} == {"resolved"}
    assert all(a["endsAt"] != "0001-01-01T00:00:00Z" for a in cleared["alerts"])
    assert n.store.failures() == []


def test_alerts_posted_in_alertmanager_s_format_are_told_like_an_edge_s_and_need_ack(
    tmp_path: Path, mosquitto: LocalServer
) -> None:
    hook = Hook("127.0.0.1")
    try:
        with one_notifier(tmp_path, mosquitto, hook, OPS) as port:
            told_through(hook, port, tmp_path / "n1.toml")
    finally:
        hook.close()


def told_through(hook: Hook, port: int, config: Path) -> None:
    """Post a smoke alarm as Alertmanager does, then its resolution; check what is told."""
    base = f"http://127.0.0.1:{port}"
    reader, acker = create(config, "read", "grafana-ro"), create(config, "ack", "grafana")
    # As Alertmanager posts a group (its documented example's fields), with linli's labels.
    group: dict[str, Any] = {
        "receiver": "linli", "status": "firing", "version": "4", "truncatedAlerts": 0,
        "groupKey": '{}:{alertname="charger.smoke_alarm.above"}', "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager.example:9093",
    }  # fmt: skip
    smoke = {
        "status": "firing",
        "labels": {
            "alertname": "charger.smoke_alarm.above", "severity": "critical", "site": "ronghua-1",
            "site_name": "荣华居民区", "device": "smoke-7", "device_name": "7号车棚烟感",
            "kind": "charger",
        },
        "annotations": {"summary": "Smoke in the charging shed"},
        "startsAt": "2026-12-07T17:30:00+08:00", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example:9090/graph", "fingerprint": "1a30ba71cca2921f",
    }  # fmt: skip
    posted = group | {"alerts": [smoke]}
    assert call(base, reader, "POST", "/alertmanager", posted).status_code == 403  # scoped
    answer = call(base, acker, "POST", "/alertmanager", posted)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"taken": 1}
    wait_for(lambda: len(hook.got) == 1, "the smoke alarm told", timeout=60)
    told = hook.got[0][0]
    assert (told["notice"], told["alert"]["rule"], told["alert"]["device"]) == (
        "firing", "charger.smoke_alarm.above", "smoke-7",
    )  # fmt: skip
    assert "7号车棚烟感" in told["text"]  # the name people know, in zh-CN
    assert [a["device"] for a in get(port, "/alerts")] == ["smoke-7"]
    # Posted again resolved: its resolution told, the alert closed.
    resolved = smoke | {"status": "resolved", "endsAt": "2026-12-07T17:35:00+08:00"}
    assert call(base, acker, "POST", "/alertmanager", group | {"alerts": [resolved]}).status_code == 200
    wait_for(lambda: len(hook.got) == 2, "the resolution told", timeout=60)
    assert hook.got[1][0]["notice"] == "resolved"
    assert hook.paths == ["/ops", "/ops"]
    assert get(port, "/alerts") == []
