"""Alert notices as people read them: every rule's title in Chinese and English, names people
know, and times in Shanghai as people write them there."""

from __future__ import annotations

import ast
import datetime as dt
import re
from pathlib import Path

import pytest

from linli.catalog.alerts import AlertMessage, AlertState, fingerprint
from linli.catalog.alerttext import NoticeKind
from linli.catalog.i18n import LOCALES, Locale, catalog
from linli.catalog.profile import Severity, builtin_profiles
from linli.cloud.notifier.channels import Notice
from linli.cloud.notifier.routing import edge_status_alert
from linli.edge.rules import profile_rules
from test_waste_messages import _prose

CJK = re.compile(r"[\u4e00-\u9fff]")
KINDS: tuple[NoticeKind, ...] = ("firing", "repeat", "escalation", "resolved")
# 2026-12-07 17:30 in Shanghai is 09:30 UTC; the alert began at 17:05 the evening before.
EVENING_MS = int(dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC).timestamp() * 1000)
EVE_MS = EVENING_MS - (24 * 60 + 25) * 60_000

RULES = [rule for profile in builtin_profiles().values() for rule in profile_rules(profile)]
# Every rule a notice may be about: the profiles' and the interlocks acting on their fields.
TOLD = [(r.id, r.kind) for r in RULES] + [
    ("interlock.charger.temperature", "charger"),
    ("interlock.charger.smoke_alarm", "charger"),
]


def alert(rule: str, kind: str, **names: str) -> AlertMessage:
    return AlertMessage(
        fingerprint=fingerprint(rule, "ronghua-1", "station-1", "3"),
        rule=rule,
        title="English title from the edge",
        severity=Severity.CRITICAL,
        state=AlertState.FIRING,
        kind=kind,
        site="ronghua-1",
        device="station-1",
        port="3",
        value=93.5,
        threshold=90,
        time_ms=EVENING_MS,
        since_ms=EVE_MS,
        edge="hongqiao-edge",
        **names,
    )


def test_every_profile_s_every_alert_rule_has_a_chinese_and_an_english_title() -> None:
    assert len(RULES) >= 12
    for rule in RULES:
        key = f"alert.rule.{rule.id}"
        assert CJK.search(catalog("zh-CN").get(key, "")), f"{rule.id} has no Chinese title ({key})"
        assert catalog("en").get(key), f"{rule.id} has no English title ({key})"
    assert CJK.search(catalog("zh-CN")["alert.rule.edge.offline"])


@pytest.mark.parametrize("kind", KINDS)
def test_every_notice_of_every_rule_reads_in_chinese_without_internal_ids(kind: NoticeKind) -> None:
    for rule, device_kind in TOLD:
        a = alert(rule, device_kind, site_name="荣华居民区", device_name="3号楼车棚充电桩")
        notice = Notice(kind, a, "ops")
        for line in [notice.subject, *notice.text().splitlines()]:
            assert CJK.search(line), f"{rule}: {line!r} is not Chinese"
        for machine in (rule, "ronghua-1", "station-1", "English title", "since", "value"):
            assert machine not in notice.text(), f"{rule}: {machine!r} in {notice.text()!r}"


def test_a_chinese_notice_names_the_place_and_shows_shanghai_times() -> None:
    a = alert("charger.temperature.above", "charger", site_name="荣华居民区", device_name="3号楼车棚充电桩")
    firing = Notice("firing", a, "ops")
    assert firing.subject == "【告警】【紧急】荣华居民区 3号楼车棚充电桩 3号端口：充电端口温度过高"
    assert firing.text().splitlines()[1:] == [
        "当前值 93.5，限值 90",
        "开始时间 12月6日 17:05",
        "上报网关 hongqiao-edge",
    ]
    resolved = Notice("resolved", a, "ops", "en").text()
    assert "since Dec 6 17:05" in resolved
    assert "resolved 17:30" in resolved
    machine = firing.to_json()
    assert (machine["since"], machine["time"]) == ("2026-12-06T17:05:00+08:00", "2026-12-07T17:30:00+08:00")
    assert machine["alert"]["site"] == "ronghua-1"  # the ids stay in the machine fields


def test_an_unnamed_device_is_told_by_its_kind_and_nameplate_id() -> None:
    a = alert("charger.smoke_alarm.above", "charger")
    assert (
        Notice("firing", a, "ops").subject
        == "【告警】【紧急】ronghua-1 充电桩 station-1 3号端口：充电柜内有烟雾"
    )
    offline = edge_status_alert("hongqiao-edge", "offline", EVENING_MS)
    assert offline is not None
    assert Notice("firing", offline, "ops").subject == "【告警】【紧急】边缘网关 hongqiao-edge：边缘网关离线"


@pytest.mark.parametrize("locale", LOCALES)
def test_a_notice_reads_back_from_its_json_in_its_language_and_zone(locale: Locale) -> None:
    notice = Notice("repeat", alert("fire_point.alarm.above", "fire_point"), "ops", locale, "Europe/Berlin")
    again = Notice.from_json(notice.to_json())
    assert again == notice
    assert again.to_json()["since"].endswith("+01:00")


def test_the_alert_texts_write_no_word_of_their_own() -> None:
    """Every word of an alert notice comes from the catalog: the module that renders them holds
    keys and names, never English prose (docstrings aside)."""
    import linli.catalog.alerttext as module

    tree = ast.parse(Path(str(module.__file__)).read_text(encoding="utf-8"))
    functions = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)]
    assert len(functions) >= 5
    bypass = {
        f.name: words
        for f in functions
        if (words := [w for stmt in (f.body[1:] if ast.get_docstring(f) else f.body) for w in _prose(stmt)])
    }
    assert not bypass, bypass
