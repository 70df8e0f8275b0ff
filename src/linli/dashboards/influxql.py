"""InfluxQL for Grafana panels: a small query builder, and the InfluxDB query target the SDK lacks.

Every query knows which measurement, fields and tags it reads, so the tests can hold them
against what the pipeline writes: a query on a misspelt field returns nothing rather than
an error, and a misspelt GROUP BY tag still returns rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

# The provisioned data source; dashboards name it by uid, so they survive a rename.
DATASOURCE = DataSourceRef(type_val="influxdb", uid="linli-influxdb")
# Grafana fills this with the dashboard's time range.
TIME_FILTER = "$timeFilter"
Format = Literal["time_series", "table"]


def ident(name: str) -> str:
    """A quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(value: str) -> str:
    """A quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Refs:
    """What one query reads from storage."""

    measurement: str
    fields: frozenset[str]
    tags: frozenset[str]


@dataclass(frozen=True)
class Column:
    """One SELECT expression: `fn("field") * scale AS "alias"`."""

    field: str
    fn: str | None = None
    alias: str | None = None
    scale: float | None = None

    @property
    def name(self) -> str:
        """The column this expression returns."""
        return self.alias or self.fn or self.field

    def render(self) -> str:
        text = ident(self.field)
        if self.fn:
            text = f"{self.fn}({text})"
        if self.scale is not None:
            text = f"{text} * {self.scale:g}"
        return f"{text} AS {ident(self.alias)}" if self.alias else text


@dataclass(frozen=True)
class Select:
    """One SELECT statement over a measurement or a subquery; each method returns a new one."""

    source: str | Select
    columns: tuple[Column, ...] = ()
    conditions: tuple[str, ...] = ()
    field_conditions: tuple[str, ...] = ()
    condition_tags: frozenset[str] = frozenset()
    time_condition: str = TIME_FILTER
    group_tags: tuple[str, ...] = ()
    interval: str | None = None
    fill_value: str = "null"
    zone: str | None = None
    limit_rows: int | None = None
    newest_first: bool = False
    extra_fields: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def over(cls, inner: Select) -> Self:
        """A statement over a subquery's rows; the subquery bounds the time."""
        if inner.interval is not None and inner.fill_value != "null":
            # InfluxDB leaves the filled rows of a subquery unmerged under an outer GROUP BY
            # time: sums come out once per inner series (influxdata/influxdb#16960).
            raise ValueError(f"a subquery filled with fill({inner.fill_value}) gives wrong outer sums")
        return cls(inner, time_condition="")

    def select(
        self, name: str, fn: str | None = None, *, alias: str | None = None, scale: float | None = None
    ) -> Self:
        """Add a column: a field (or a subquery column), optionally aggregated, scaled, renamed."""
        if isinstance(self.source, Select) and name not in self.source.column_names():
            raise ValueError(f"the subquery has no column '{name}'; it has {self.source.column_names()}")
        return replace(self, columns=(*self.columns, Column(name, fn, alias, scale)))

    def tag_is(self, tag: str, value: str) -> Self:
        """WHERE tag = 'value'."""
        return self._tag_condition(tag, f"{ident(tag)} = {literal(value)}")

    def tag_not(self, tag: str, value: str) -> Self:
        """WHERE tag != 'value'."""
        return self._tag_condition(tag, f"{ident(tag)} != {literal(value)}")

    def tag_like(self, tag: str, pattern: str) -> Self:
        """WHERE tag =~ /pattern/ (a fixed pattern, not a variable)."""
        return self._tag_condition(tag, f"{ident(tag)} =~ /{pattern}/")

    def tag_matches(self, tag: str, variable: str) -> Self:
        """WHERE tag =~ /^$variable$/ : a dashboard variable, one value, several or All."""
        return self._tag_condition(tag, f"{ident(tag)} =~ /^${variable}$/")

    def tags_match(self, tags: dict[str, str]) -> Self:
        """WHERE each tag = its value."""
        out = self
        for tag, value in sorted(tags.items()):
            out = out.tag_is(tag, value)
        return out

    def field_is(self, name: str, op: str, value: str | float | bool) -> Self:
        """WHERE on a field (or a subquery column) value."""
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        else:
            rendered = literal(value) if isinstance(value, str) else f"{value:g}"
        out = replace(self, field_conditions=(*self.field_conditions, f"{ident(name)} {op} {rendered}"))
        if isinstance(self.source, str):
            out = replace(out, extra_fields=self.extra_fields | {name})
        return out

    def during(self, condition: str) -> Self:
        """The time condition; the dashboard's range unless told otherwise."""
        return replace(self, time_condition=condition)

    def by(self, *tags: str) -> Self:
        """GROUP BY tags: one series (or row group) per value."""
        return replace(self, group_tags=(*self.group_tags, *tags))

    def by_time(self, interval: str = "$__interval", fill: str = "null") -> Self:
        """GROUP BY time(interval) fill(...)."""
        return replace(self, interval=interval, fill_value=fill)

    def held(self, interval: str = "$__interval") -> Self:
        """GROUP BY time(interval) fill(previous), for `last()` of a value reported by exception:
        stored only when it moves, it holds its value over the windows with nothing new."""
        return self.by_time(interval, fill="previous")

    def in_zone(self, zone: str) -> Self:
        """tz(): day and hour buckets start at local midnight and on the local hour."""
        return replace(self, zone=zone)

    def latest(self, n: int) -> Self:
        """The newest `n` rows (of each series), newest first."""
        return replace(self, limit_rows=n, newest_first=True)

    def _tag_condition(self, tag: str, text: str) -> Self:
        return replace(self, conditions=(*self.conditions, text), condition_tags=self.condition_tags | {tag})

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def render(self) -> str:
        """The statement's text, with Grafana's macros left in place."""
        if not self.columns:
            raise ValueError("a query needs at least one column")
        source = self.source if isinstance(self.source, str) else None
        text = "SELECT " + ", ".join(c.render() for c in self.columns)
        text += " FROM " + (ident(source) if source is not None else f"({self.source.render()})")  # type: ignore[union-attr]
        where = [c for c in (*self.conditions, *self.field_conditions, self.time_condition) if c]
        if where:
            text += " WHERE " + " AND ".join(where)
        groups = ([f"time({self.interval})"] if self.interval else []) + [ident(t) for t in self.group_tags]
        if groups:
            text += " GROUP BY " + ", ".join(groups)
        if self.interval:
            text += f" fill({self.fill_value})"
        if self.newest_first:
            text += " ORDER BY time DESC"
        if self.limit_rows is not None:
            text += f" LIMIT {self.limit_rows}"
        if self.zone:
            text += f" tz({literal(self.zone)})"
        return text

    def refs(self) -> list[Refs]:
        """What this statement, and any subquery, reads from storage."""
        if isinstance(self.source, Select):
            inner = self.source.refs()
            # The outer statement can only group by tags the subquery grouped by.
            missing = set(self.group_tags) - set(self.source.group_tags)
            if missing:
                raise ValueError(f"grouping by {sorted(missing)}, which the subquery does not keep")
            return inner
        fields = frozenset(c.field for c in self.columns) | self.extra_fields
        return [Refs(self.source, fields, self.condition_tags | frozenset(self.group_tags))]


def show_tag_values(measurement: str, key: str, where: Iterable[tuple[str, str]] = ()) -> tuple[str, Refs]:
    """A variable's query: the values of one tag, narrowed by other variables."""
    text = f"SHOW TAG VALUES FROM {ident(measurement)} WITH KEY = {ident(key)}"
    conditions = [f"{ident(tag)} =~ /^${variable}$/" for tag, variable in where]
    if conditions:
        text += " WHERE " + " AND ".join(conditions)
    tags = frozenset([key, *(tag for tag, _ in where)])
    return text, Refs(measurement, frozenset(), tags)


class InfluxQuery(cogvariants.Dataquery):
    """A raw InfluxQL query as Grafana's InfluxDB data source stores it."""

    def __init__(
        self,
        ref_id: str,
        select: Select,
        result_format: Format,
        alias: str | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.select = select
        self.query = select.render()
        self.refs = select.refs()
        self.result_format = result_format
        self.alias = alias
        self.extra = extra or {}

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": DATASOURCE.to_json(),
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias:
            out["alias"] = self.alias
        return {**out, **self.extra}


class Target(cogbuilder.Builder[InfluxQuery]):
    """A panel target from a Select; `alias` names series, e.g. "$tag_site"."""

    def __init__(
        self, select: Select, *, fmt: Format = "time_series", alias: str | None = None, ref_id: str = "A"
    ) -> None:
        self.select = select
        self.fmt = fmt
        self.alias_text = alias
        self.ref = ref_id

    def ref_id(self, ref_id: str) -> Self:
        self.ref = ref_id
        return self

    def build(self) -> InfluxQuery:
        return InfluxQuery(self.ref, self.select, self.fmt, self.alias_text)
