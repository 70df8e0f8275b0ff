"""The big screen's data from a VictoriaMetrics (the demo's store), for `linli dashboards picture`.

The panels are InfluxQL, which VictoriaMetrics does not speak. It keeps what it was written
(InfluxDB line protocol) as numbers, one metric per field, `measurement_field`, the tags as
labels. So the picture exports the series its panels read, for the time drawn, writes them back
as line protocol into a throwaway InfluxDB 1.x, and runs the panels' own queries there: the
same queries Grafana runs, on the same points. What cannot come back: string fields (VictoriaMetrics
stores each as 0: a trip's next stop is left out rather than shown as 0), and booleans come back
as 1 and 0, made booleans again for the fields the panels compare with true or false.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any

from linli.catalog.lineprotocol import escape_key, escape_measurement

_FROM = re.compile(r'FROM "(\w+)"')
_LAST = re.compile(r'last\("(\w+)"\)')
_BOOLEAN = re.compile(r"= (true|false)\b")
BATCH = 5000  # lines a write
# String fields the panels read (written by linli.cloud.waste.outbox.trip_line): stored as 0.
STRINGS = frozenset({("waste_trip", "next_stop")})


def measurements(dashboard: dict[str, Any]) -> set[str]:
    """Every measurement the dashboard's panels read."""
    return {m for query in _queries(dashboard) for m in _FROM.findall(query)}


def booleans(dashboard: dict[str, Any]) -> set[tuple[str, str]]:
    """(measurement, field) the panels compare with true or false: booleans when written."""
    out = set()
    for query in _queries(dashboard):
        if _BOOLEAN.search(query):
            out |= {(m, f) for m in _FROM.findall(query) for f in _LAST.findall(query)}
    return out


def _queries(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield str(target.get("query", ""))


def export(url: str, names: Iterable[str], start_ms: int, end_ms: int) -> Iterator[dict[str, Any]]:
    """Every series of these measurements between the times, as VictoriaMetrics exports them."""
    pattern = "|".join(sorted(re.escape(n) for n in names))
    query = urllib.parse.urlencode(
        # Seconds: VictoriaMetrics takes a bare number as seconds.
        {
            "match[]": f'{{__name__=~"({pattern})_.+"}}',
            "start": f"{start_ms / 1000:.3f}",
            "end": f"{end_ms / 1000:.3f}",
        }
    )
    if not url.startswith(("http://", "https://")):
        raise OSError(f"not an HTTP URL: {url}")
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/export?{query}", timeout=120) as answer:  # noqa: S310 (checked above)
        for line in answer:
            if line.strip():
                yield json.loads(line)


def newest_ms(url: str, names: Iterable[str]) -> int | None:
    """The time of the newest point of these measurements: the demo's clock may be ahead of ours."""
    newest = None
    for series in export(url, names, 0, 4_102_444_800_000):  # up to 2100
        last = max(series["timestamps"], default=None)
        if last is not None and (newest is None or last > newest):
            newest = last
    return newest


def to_lines(series: Iterable[dict[str, Any]], names: set[str], flags: set[tuple[str, str]]) -> Iterator[str]:
    """Line protocol (ms) for each exported point: `measurement_field` split at the longest
    measurement the dashboard reads (a field may have underscores, a measurement too)."""
    by_length = sorted(names, key=len, reverse=True)
    for s in series:
        labels = dict(s["metric"])
        metric = labels.pop("__name__")
        labels.pop("db", None)  # the database VictoriaMetrics was written for, not a tag
        measurement = next((m for m in by_length if metric.startswith(m + "_")), None)
        if measurement is None:
            continue
        field = metric[len(measurement) + 1 :]
        if (measurement, field) in STRINGS:
            continue
        key = escape_measurement(measurement) + "".join(
            f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(labels.items()) if v
        )
        flag = (measurement, field) in flags
        for value, ts in zip(s["values"], s["timestamps"], strict=True):
            text = ("true" if value else "false") if flag else repr(float(value))
            yield f"{key} {escape_key(field)}={text} {ts}"


def copy(
    vm_url: str, influx_url: str, database: str, dashboard: dict[str, Any], *, start_ms: int, end_ms: int
) -> int:
    """The dashboard's series from VictoriaMetrics into an InfluxDB 1.x database; lines written."""
    names = measurements(dashboard)
    lines = to_lines(export(vm_url, names, start_ms, end_ms), names, booleans(dashboard))
    written = 0
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= BATCH:
            written += _write(influx_url, database, batch)
    return written + _write(influx_url, database, batch)


def _write(url: str, database: str, batch: list[str]) -> int:
    if not batch:
        return 0
    query = urllib.parse.urlencode({"db": database, "precision": "ms"})
    request = urllib.request.Request(  # noqa: S310 (the throwaway InfluxDB on loopback)
        f"{url}/write?{query}", data="\n".join(batch).encode(), method="POST"
    )
    urllib.request.urlopen(request, timeout=120).close()  # noqa: S310
    n = len(batch)
    batch.clear()
    return n
