"""The alert event message: what an edge publishes for each step of an alert, and the notifier reads.

Published at QoS 1 on `linli/alerts/{edge}/{site}/{device}` as UTF-8 JSON; the JSON
Schema is `docs/alert-event.schema.json` (`linli catalog alert-schema` writes it).
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from linli.catalog.profile import Severity

ALERT_TOPIC = "linli/alerts"
EDGE_STATUS_TOPIC = "linli/edges"
# What an edge's status topic says: up, gone without a goodbye (its last will), or stopped on purpose.
EDGE_ONLINE = "online"
EDGE_OFFLINE = "offline"
EDGE_STOPPED = "stopped"
# Identifiers (site, device, kind, edge) are short; a longer one is not an alert of ours.
NAME_MAX = 128
# The last millisecond of year 9999: later times cannot be shown as dates.
MAX_TIME_MS = 253_402_300_799_999


def fingerprint(rule: str, site: str, device: str, port: str | None) -> str:
    """Stable across restarts and edges: the same alert on the same thing is the same alert."""
    text = "\x1f".join([rule, site, device, port or ""])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class AlertState(StrEnum):
    OK = "ok"  # a pending alert that cleared before it fired
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertMessage(BaseModel):
    """One step of one alert on one device (or one port of it)."""

    # NaN and infinity are refused: JSON has no such numbers, and a stored NaN reads back as null.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    fingerprint: Annotated[
        str, Field(pattern=r"^[0-9a-f]{16}$", description="Same alert, same thing: same value")
    ]
    rule: Annotated[str, Field(min_length=1, max_length=128, description="e.g. charger.temperature.above")]
    title: Annotated[str, Field(max_length=256)]
    severity: Severity
    state: AlertState
    kind: Annotated[str, Field(max_length=NAME_MAX, description="Device kind (profile)")]
    site: Annotated[str, Field(max_length=NAME_MAX)]
    device: Annotated[str, Field(max_length=NAME_MAX)]
    port: Annotated[str, Field(max_length=NAME_MAX)] | None = Field(
        description="The port, for a per-port field; else null"
    )
    value: float | None = Field(description="What was measured (for silence: seconds without data)")
    threshold: float
    time_ms: Annotated[
        int, Field(ge=0, le=MAX_TIME_MS, description="When this step happened, ms since the epoch (UTC)")
    ]
    since_ms: Annotated[int, Field(ge=0, le=MAX_TIME_MS, description="When the condition began")]
    edge: Annotated[str, Field(max_length=NAME_MAX, description="The agent that saw it")]
    # What people call the site and the device (the edge config's names); empty when unnamed.
    site_name: Annotated[str, Field(max_length=NAME_MAX, description="The site as people name it")] = ""
    device_name: Annotated[str, Field(max_length=NAME_MAX, description="The device as people name it")] = ""
    # The same names in English, for a subscriber who reads English; empty: the names above.
    site_name_en: Annotated[str, Field(max_length=NAME_MAX, description="The site's name in English")] = ""
    device_name_en: Annotated[str, Field(max_length=NAME_MAX, description="The device's name in English")] = (
        ""
    )
