"""Drill-down: the edge itself: which devices answer, how fast, what fails, and the agent's buffer."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from linli.dashboards import theme
from linli.dashboards.alerts import RECENT
from linli.dashboards.influxql import Select, Target
from linli.dashboards.panels import (
    Annotation,
    board,
    latest_table,
    place,
    props,
    timeline,
    trend,
    variable,
    with_panels,
)

UID = "linli-edge"


def _devices() -> Select:
    return Select("health").tag_matches("kind", "kind").tag_matches("site", "site").tag_not("kind", "agent")


def _agent() -> Select:
    return Select("health").tag_is("kind", "agent")


def dashboard() -> db.Dashboard:
    """Edge health: devices online over time, latency, errors, and the durable buffer's depth and age."""
    online = place(
        timeline("Devices online", theme.flags(("online", theme.OK), ("offline", theme.CRITICAL))),
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
        trend("Poll and message latency", "ms"),
        (0, 10, 12, 8),
        Target(_devices().select("latency_ms", "mean", alias="ms").by_time().by("kind"), alias="$tag_kind"),
    )
    offline = place(
        latest_table("Devices now")
        .override_by_name(
            "online",
            props(
                ("mappings", theme.flags(("online", theme.OK), ("OFFLINE", theme.CRITICAL))),
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
        trend("Agent buffer: lines waiting, and the oldest one's age", "short").override_by_name(
            "oldest s", props(("unit", "s"), ("custom.axisPlacement", "right"))
        ),
        (0, 18, 12, 8),
        Target(
            _agent().select("buffer_lines", "max", alias="lines").by_time().by("device"),
            alias="$tag_device lines",
        ),
        Target(
            _agent().select("oldest_pending_s", "max", alias="s").by_time().by("device"), alias="oldest s"
        ),
    )
    writes = place(
        trend("Agent writes", "short"),
        (12, 18, 12, 8),
        Target(_agent().select("written", "difference", alias="written").by("device"), alias="written"),
        Target(_agent().select("retried", "difference", alias="retried").by("device"), alias="retried"),
        Target(
            _agent().select("dead_lettered", "difference", alias="dead").by("device"), alias="dead-lettered"
        ),
    )
    dash = (
        board("Edge health", UID, ["edge"])
        .with_variable(variable("kind", "Kind", "health", "kind"))
        .with_variable(variable("site", "Site", "health", "site", within=(("kind", "kind"),)))
        .annotation(
            Annotation.changes(
                "Device came online (1) or went offline (-1)",
                Select("health").tag_not("kind", "agent").tag_matches("site", "site"),
                "online",
                theme.OFF,
            )
        )
    )
    return with_panels(dash, online, latency, offline, buffer, writes)
