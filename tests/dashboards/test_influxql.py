"""The InfluxQL builder: the text it renders, and what it says each query reads."""

from __future__ import annotations

import pytest

from linli.dashboards.influxql import Refs, Select, Target, ident, literal, show_tag_values
from linli.dashboards.influxv1 import expand


def test_a_panel_query_with_variables_time_buckets_and_zone() -> None:
    q = (
        Select("camera")
        .tag_matches("site", "site")
        .select("interception", "sum", alias="stopped")
        .by_time("1h", fill="0")
        .by("device")
        .in_zone("Asia/Shanghai")
    )
    assert q.render() == (
        'SELECT sum("interception") AS "stopped" FROM "camera" WHERE "site" =~ /^$site$/ AND $timeFilter '
        "GROUP BY time(1h), \"device\" fill(0) tz('Asia/Shanghai')"
    )
    assert q.refs() == [Refs("camera", frozenset({"interception"}), frozenset({"site", "device"}))]


def test_a_count_over_the_latest_values_reads_only_the_inner_measurement() -> None:
    latest = (
        Select("charger")
        .select("state", "last", alias="state")
        .during("time > now() - 5m")
        .by("site", "port")
    )
    count = Select.over(latest).select("state", "count", alias="ports").field_is("state", "=", 3).by("site")
    assert count.render() == (
        'SELECT count("state") AS "ports" FROM (SELECT last("state") AS "state" FROM "charger" '
        'WHERE time > now() - 5m GROUP BY "site", "port") WHERE "state" = 3 GROUP BY "site"'
    )
    assert count.refs() == [Refs("charger", frozenset({"state"}), frozenset({"site", "port"}))]


def test_mistakes_that_influxdb_would_answer_with_silence_are_errors_here() -> None:
    latest = Select("charger").select("state", "last", alias="state").by("site")
    with pytest.raises(ValueError, match="no column 'power'"):
        Select.over(latest).select("power", "sum")
    with pytest.raises(ValueError, match="does not keep"):
        Select.over(latest).select("state", "count").by("device").refs()
    with pytest.raises(ValueError, match="at least one column"):
        Select("charger").render()


def test_names_and_strings_are_quoted_and_values_typed() -> None:
    assert ident('a"b') == '"a\\"b"'
    assert literal("it's") == "'it\\'s'"
    q = Select("truck").select("alarm").field_is("active", "=", True).field_is("alarm", "!=", "").latest(5)
    assert q.render() == (
        'SELECT "alarm" FROM "truck" WHERE "active" = true AND "alarm" != \'\' AND $timeFilter '
        "ORDER BY time DESC LIMIT 5"
    )
    assert q.refs()[0].fields == {"alarm", "active"}


def test_variables_and_the_target_grafana_stores() -> None:
    text, refs = show_tag_values("charger", "device", [("site", "site")])
    assert text == 'SHOW TAG VALUES FROM "charger" WITH KEY = "device" WHERE "site" =~ /^$site$/'
    assert refs.tags == {"device", "site"}
    target = Target(Select("charger").select("power", "max"), alias="$tag_site").ref_id("B").build().to_json()
    assert target["refId"] == "B"
    assert target["rawQuery"] is True
    assert target["resultFormat"] == "time_series"
    assert target["alias"] == "$tag_site"
    assert target["datasource"] == {"type": "influxdb", "uid": "linli-influxdb"}


def test_macros_expand_as_grafana_sends_them() -> None:
    text = 'WHERE "site" =~ /^$site$/ AND "device" =~ /^$device$/ AND $timeFilter GROUP BY time($__interval)'
    assert expand(text, 1000, 2000, "30s", {"site": "a.b"}) == (
        'WHERE "site" =~ /^a\\.b$/ AND "device" =~ /^.*$/ AND time >= 1000ms AND time <= 2000ms '
        "GROUP BY time(30s)"
    )
