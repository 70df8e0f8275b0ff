"""Drill-down: the edge itself: which devices answer, how fast, what fails, and the agent's buffer."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model

from linli.dashboards import names, theme
from linli.dashboards.alerts import RECENT
from linli.dashboards.influxql import Select, Target
from linli.dashboards.panels import (
    Annotation,
    board,
    choice,
    latest_table,
    place,
    props,
    timeline,
    trend,
    with_panels,
)
from linli.dashboards.words import t

UID = "linli-edge"


def _devices() -> Select:
    return Select("health").tag_matches("kind", "kind").tag_matches("site", "site").tag_not("kind", "agent")


def _agent() -> Select:
    return Select("health").tag_is("kind", "agent")


def online_flags() -> list[model.ValueMapping]:
    """A device's `online` flag as words: green online, red offline."""
    return theme.flags((t("edge.is_online"), theme.OK), (t("edge.is_offline"), theme.CRITICAL))


def dashboard() -> db.Dashboard:
    """Edge health: devices online over time, latency, errors, and the durable buffer's depth and age."""
    online = place(
        timeline(t("edge.online"), online_flags()),
        (0, 0, 24, 10),
        Target(
            _devices()
            .select("online", "last", alias="online")
            .by_time("1m", fill="previous")
            .by("kind", "site", "device"),
            alias="$tag_site $tag_device",
        ),
    )
    latency = place(
        trend(t("edge.latency"), "ms"),
        (0, 10, 12, 8),
        Target(_devices().select("latency_ms", "mean", alias="ms").by_time().by("kind"), alias="$tag_kind"),
    )
    offline = place(
        latest_table(t("edge.devices_now"))
        .override_by_name(
            "online",
            props(
                ("mappings", online_flags()),
                ("custom.cellOptions", {"type": "color-background"}),
            ),
        )
        .override_by_name("last_seen_ms", props(("unit", "dateTimeAsLocal"))),
        (12, 10, 12, 8),
        Target(
            _devices()
            .select("online", "last", alias="online")
            .select("errors", "last", alias="errors")
            .select("last_seen_ms", "last", alias="last_seen_ms")
            .during(RECENT)
            .by("kind", "site", "device"),
            fmt="table",
        ),
    )
    buffer = place(
        trend(t("edge.buffer"), "short").override_by_name(
            t("edge.oldest"), props(("unit", "s"), ("custom.axisPlacement", "right"))
        ),
        (0, 18, 12, 8),
        Target(
            _agent().select("buffer_lines", "max", alias="lines").by_time().by("device"),
            alias=t("edge.lines", device="$tag_device"),
        ),
        Target(
            _agent().select("oldest_pending_s", "max", alias="s").by_time().by("device"),
            alias=t("edge.oldest"),
        ),
    )
    writes = place(
        trend(t("edge.writes"), "short"),
        (12, 18, 12, 8),
        Target(
            _agent().select("written", "difference", alias="written").by("device"), alias=t("edge.written")
        ),
        Target(
            _agent().select("retried", "difference", alias="retried").by("device"), alias=t("edge.retried")
        ),
        Target(
            _agent().select("dead_lettered", "difference", alias="dead").by("device"), alias=t("edge.dead")
        ),
    )
    flips = Select("health").tag_not("kind", "agent").tag_matches("site", "site")
    came_online, went_offline = Annotation.changes(
        t("edge.came_online"), t("edge.went_offline"), flips, "online", theme.OFF
    )
    dash = (
        board(t("edge.title"), UID, ["edge"])
        .with_variable(choice("kind", t("var.kind"), names.kinds()))
        .with_variable(choice("site", t("var.site"), names.sites()))
        .annotation(came_online)
        .annotation(went_offline)
    )
    return with_panels(dash, online, latency, offline, buffer, writes)
