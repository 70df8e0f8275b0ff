"""Names people know, across the district: every message a person gets about a site, a bin room
or a truck names it as people say it (in Chinese, or in English when they read English), and
never by an id the machines use."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from linli.catalog.alerts import AlertMessage
from linli.catalog.i18n import LOCALES, Locale
from linli.catalog.profile import Severity
from linli.cloud.channels import Notice
from linli.cloud.waste.gtfs import load_feed
from linli.edge.alerting import Alerting
from linli.edge.config import load_config
from linli.edge.rules import AlertEvent, State
from linli.sim.scenario import builtin_scenario_path, load_scenario

ROOT = Path(__file__).resolve().parents[1]
CJK = re.compile(r"[\u4e00-\u9fff]")
SCENARIO = load_scenario(builtin_scenario_path())
SITES = {site.id: site for site in SCENARIO.sites}
FEED = load_feed(ROOT / "deploy" / "gtfs" / "hongqiao")
# The ids a person must never read: the sites', the stops' and the trucks' (`fleet`, a word too, is
# left out: "Hongqiao refuse fleet" is a name).
IDS = {i for i in [*SITES, *FEED.stops, *FEED.extras.trucks] if "-" in i}


def ids_in(text: str, ids: set[str]) -> list[str]:
    """The ids in `text`, as whole words (`gubei-1` is not found in `gubei-12`)."""
    return [i for i in ids if re.search(rf"(?<![\w-]){re.escape(i)}(?![\w-])", text)]


def test_every_site_of_the_district_has_a_chinese_and_an_english_name() -> None:
    assert len(SITES) >= 30
    for site in SITES.values():
        assert CJK.search(site.name), f"{site.id}: {site.name!r} is not Chinese"
        assert site.name_en, f"{site.id} has no English name"
        assert not CJK.search(site.name_en), f"{site.id}: English name {site.name_en!r}"
    # Two sites with one name would be one place to a person.
    assert len({s.name for s in SITES.values()}) == len(SITES)
    assert len({s.name_en for s in SITES.values()}) == len(SITES)


@pytest.mark.parametrize("locale", LOCALES)
def test_an_alert_at_any_site_of_the_district_names_the_site_not_its_id(locale: Locale) -> None:
    # Through the edge agent's own naming, from the district's generated config.
    config = load_config(ROOT / "deploy" / "district.toml")
    alerting = Alerting(config, emit=lambda _lines: None)
    hot = AlertEvent(
        "charger.temperature.above", "Port over temperature", Severity.CRITICAL, State.FIRING,
        "charger", "", "", None, 93.5, 90.0, 1_796_637_000_000, 1_796_636_000_000, config.agent.name,
    )  # fmt: skip
    events = [
        dataclasses.replace(hot, kind=device.profile, site=site.id, device=device.id)
        for site in config.sites
        for device in site.devices[:1]
    ]
    alerting.record(events)
    assert {e.site for e in alerting.events} == set(SITES)
    for event in alerting.events:
        notice = Notice("firing", AlertMessage.model_validate(event.to_json()), "ops", locale)
        site = SITES[event.site]
        said = notice.subject + "\n" + notice.text()
        assert (site.name if locale == "zh-CN" else site.name_en) in notice.subject, said
        assert not ids_in(said, IDS), said
