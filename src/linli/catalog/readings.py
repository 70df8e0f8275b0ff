"""The reading model: one validated point on its way to storage."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from linli.catalog.lineprotocol import FieldValue, format_line
from linli.catalog.profile import RESERVED_TAGS

Key = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]

# Timestamps outside this window are a wrong device clock, not data: 2000-01-01 to 2100-01-01.
MIN_TIME_MS = 946_684_800_000
MAX_TIME_MS = 4_102_444_800_000


class Reading(BaseModel):
    """One point: a measurement, its identity tags, its field values and a UTC time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    measurement: Key
    tags: dict[Key, Annotated[str, Field(min_length=1, max_length=256)]]
    fields: Mapping[Key, FieldValue]
    time_ms: Annotated[int, Field(ge=MIN_TIME_MS, le=MAX_TIME_MS)]

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if not self.fields:
            raise ValueError("a reading needs at least one field")
        for name, value in self.fields.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"field '{name}' is {value}; only finite numbers are stored")
        clash = set(self.tags) & set(self.fields)
        if clash:
            raise ValueError(f"names used as both tag and field: {', '.join(sorted(clash))}")
        missing = {"site", "device"} - set(self.tags)
        if missing:
            raise ValueError(f"missing identity tags: {', '.join(sorted(missing))}")
        reserved = set(self.fields) & RESERVED_TAGS
        if reserved:
            raise ValueError(f"reserved tag names used as fields: {', '.join(sorted(reserved))}")
        return self

    def to_line(self) -> str:
        """The reading in InfluxDB line protocol, millisecond precision."""
        return format_line(self.measurement, self.tags, self.fields, self.time_ms)
