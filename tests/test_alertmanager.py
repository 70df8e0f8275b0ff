"""Alertmanager's webhook format out (issue 35): a channel of kind `alertmanager` posts each
message as Alertmanager posts a group to a webhook receiver (JSON `version` 4), so that existing
receivers (prometheus-webhook-dingtalk and the like) work unchanged.

The notifier's real state (SQLite and PostgreSQL) and sender, to a real HTTP receiver; the
payload checked against the fields and types Alertmanager documents for `webhook_config`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from alertflow import Hook
from linli.cloud.channels import Sender
from linli.cloud.config import (
    ChannelKind,
    DeliveryConfig,
    HttpChannel,
    NotifierConfig,
    SmtpConfig,
    Subscription,
)
from linli.cloud.notifier import Notifier
from linli.cloud.store import Store
from test_grouping import offline
from test_notifier import Clock, at, run

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
