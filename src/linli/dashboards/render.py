"""A picture of a dashboard without Grafana: its panels drawn with matplotlib from its own queries.

Each panel sits where its grid position puts it on a 1920x1080 canvas, runs its InfluxQL
as Grafana would, and is drawn the way its type shows data: stats as big numbers, bar
gauges as bars, time series as lines or bars, the bar chart stacked, the map as tracks
and markers on plain WGS-84 axes. Colours come from the panel's thresholds and fixed
colours, so the picture uses the screen's own colour rules; names from its display-name
overrides and every figure with its unit. The words are Chinese, so the text is set in
Noto Sans CJK (Debian's fonts-noto-cjk): matplotlib's default font has no CJK glyphs.
How a panel's field config names, counts and colours a series is in `fields`.
"""

from __future__ import annotations

import math
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import matplotlib as mpl

mpl.use("Agg")  # no display: files only
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from linli.catalog.i18n import DEFAULT_LOCALE, Locale, clock
from linli.dashboards.fields import (
    _cell,
    _columns,
    _field_colour,
    _figure,
    _last,
    _mapped,
    _name,
    _shown,
    _unit,
    colour,
    renamed,
)
from linli.dashboards.influxv1 import Series, expand, run

GRID_ROWS = 28  # what a 1080-pixel kiosk screen shows
BACKGROUND, PANEL = "#111217", "#181b1f"


# Noto Sans CJK, regular and bold, as Debian's fonts-noto-cjk installs them.
CJK_PACKAGE = "fonts-noto-cjk"
CJK_FILES = ("NotoSansCJK-Regular.ttc", "NotoSansCJK-Bold.ttc")
CJK_FAMILY = "Noto Sans CJK SC"  # the collection's Simplified Chinese face: 压, 门 as Shanghai writes them


class FontMissingError(RuntimeError):
    """The CJK font is not installed: the picture would show boxes for every Chinese word."""


@cache
def cjk_family() -> str:
    """Noto Sans CJK SC, registered with matplotlib from the system's font files.

    A matplotlib that registers only a collection's first face gets that face (JP), which
    still has every Chinese glyph."""
    found = {Path(f).name: f for f in font_manager.findSystemFonts() if Path(f).name in CJK_FILES}
    if CJK_FILES[0] not in found:
        raise FontMissingError(
            f"no Noto Sans CJK font ({CJK_FILES[0]}) on this machine; "
            f"install it with: apt-get install {CJK_PACKAGE}"
        )
    for path in found.values():
        font_manager.fontManager.addfont(path)
    if any(entry.name == CJK_FAMILY for entry in font_manager.fontManager.ttflist):
        return CJK_FAMILY
    return font_manager.FontProperties(fname=found[CJK_FILES[0]]).get_name()


class Source:
    """Runs a panel's queries against one store for one time range."""

    def __init__(
        self, url: str, database: str, start_ms: int, end_ms: int, *, zone: str, token: str | None = None
    ) -> None:
        self.url, self.database, self.token = url, database, token
        self.start_ms, self.end_ms, self.zone = start_ms, end_ms, ZoneInfo(zone)
        self.empty: list[str] = []  # the panels drawn with no value to show, by title

    def frames(self, panel: dict[str, Any]) -> list[tuple[str, Series]]:
        """(display name, series) for every series of every query, one per value column."""
        start = self._panel_start(panel)
        out = []
        for target in panel.get("targets", []):
            interval = f"{max(1, (self.end_ms - start) // 1000 // 120)}s"
            # The screen as it stood at the end of the range: its "now" is the end (a store on a
            # simulated clock is ahead of ours).
            text = target["query"].replace("now()", f"{self.end_ms}ms")
            query = expand(text, start, self.end_ms, interval)
            for series in run(self.url, self.database, query, token=self.token):
                out.append((renamed(panel, _name(target.get("alias"), series)), series))
        if not any(v is not None for _, s in out for row in s.values for v in row[1:]):
            self.empty.append(str(panel.get("title", "")))
        return out

    def _panel_start(self, panel: dict[str, Any]) -> int:
        if panel.get("timeFrom") == "now/d":  # today, in the dashboard's zone
            end = datetime.fromtimestamp(self.end_ms / 1000, self.zone)
            midnight = end.replace(hour=0, minute=0, second=0, microsecond=0)
            return max(self.start_ms, int(midnight.timestamp() * 1000))
        return self.start_ms


def _points(ax: Axes, share: float) -> float:
    """A font size in points as tall as `share` of the axes' height."""
    return float(ax.get_position().height * ax.figure.bbox.height * share * 72 / ax.figure.dpi)


def _stat(ax: Axes, panel: dict[str, Any], frames: list[tuple[str, Series]]) -> None:
    calcs = panel.get("options", {}).get("reduceOptions", {}).get("calcs", [])
    shown = [(n, _last(s, calcs)) for n, s in frames] or [("", None)]
    named = len(shown) > 1
    # As large as the tile allows, above the names when there are several figures.
    fontsize = min(34 if not named else 26, _points(ax, 0.42 if named else 0.6))
    for i, (name, value) in enumerate(shown):
        x = (i + 0.5) / len(shown)
        tint = _field_colour(panel, name, value or 0.0)
        ax.text(
            x,
            0.58 if named else 0.45,
            _figure(panel, name, value or 0.0),
            ha="center",
            va="center",
            fontsize=fontsize,
            color=tint,
            weight="bold",
            transform=ax.transAxes,
        )
        if named:
            ax.text(
                x,
                0.08,
                _shown(panel, name),
                ha="center",
                fontsize=10,
                color=colour("text"),
                transform=ax.transAxes,
            )


def _bargauge(ax: Axes, panel: dict[str, Any], frames: list[tuple[str, Series]]) -> None:
    calcs = panel.get("options", {}).get("reduceOptions", {}).get("calcs", [])
    bars = [(n, v) for n, s in frames if (v := _last(s, calcs)) is not None]
    if not bars:
        empty = panel.get("fieldConfig", {}).get("defaults", {}).get("noValue", "-")
        ax.text(
            0.5,
            0.5,
            empty,
            ha="center",
            va="center",
            fontsize=20,
            color=colour("green"),
            transform=ax.transAxes,
        )
        ax.axis("off")
        return
    names = [n for n, _ in bars][::-1]
    values = [v for _, v in bars][::-1]
    rows = range(len(values))
    ax.barh(rows, values, color=[_field_colour(panel, n, v) for n, v in zip(names, values, strict=True)])
    top = panel.get("fieldConfig", {}).get("defaults", {}).get("max") or max(values) * 1.15 or 1
    ax.set_xlim(0, top)
    ax.set_xticks([])
    # Each name beside its bar, however short the bar; the value with its unit after the bar's end.
    _names_at_left(ax, list(rows), [_shown(panel, n) for n in names])
    for i, (name, v) in enumerate(zip(names, values, strict=True)):
        ax.text(v, i, " " + _figure(panel, name, v), va="center", color=colour("text"), fontsize=9)


def _names_at_left(ax: Axes, rows: list[Any], names: list[str], fontsize: float = 8) -> None:
    """Names as the rows' labels, the axes narrowed so that the longest fits inside the panel."""
    ax.set_yticks(rows, names, fontsize=fontsize, color=colour("text"))
    ax.tick_params(axis="y", length=0)
    _room_at_left(ax, names, fontsize)


def _room_at_left(ax: Axes, labels: list[str], fontsize: float) -> None:
    """Narrow the axes so that labels left of it stay inside its panel, clear of the next one."""
    # A Latin character is about 0.58 em wide, a Chinese one (two columns) a full em.
    widest = max((_columns(label) for label in labels), default=0) * fontsize * ax.figure.dpi / 72 * 0.58 + 8
    room = widest / ax.figure.bbox.width
    box = ax.get_position()
    ax.set_position((box.x0 + room, box.y0, box.width - room, box.height))


def _with_unit(value: float, unit: str) -> str:
    return f"{value:g} {unit}".strip()


def _unit_ticks(axis: Any, unit: str) -> None:
    """Write the unit after every tick's figure, so the axis reads 12 千瓦 rather than 12."""
    axis.set_major_formatter(mticker.FuncFormatter(lambda v, _: _with_unit(v, unit)))


def _timeseries(ax: Axes, panel: dict[str, Any], frames: list[tuple[str, Series]], zone: ZoneInfo) -> None:
    bars = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {}).get("drawStyle") == "bars"
    for name, series in frames:
        points = [
            (datetime.fromtimestamp(r[0] / 1000, zone), r[-1]) for r in series.values if r[-1] is not None
        ]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        tint = _field_colour(panel, name, 0.0)
        if bars:
            ax.bar(xs, ys, width=1 / 24 * 0.8, color=tint)
        else:
            ax.plot(xs, ys, color=tint, linewidth=1.5)
    # Over a few minutes the ticks fall within a minute: their seconds tell them apart.
    low, high = ax.get_xlim()
    clock_format = "%H:%M:%S" if (high - low) * 86_400 < 600 else "%H:%M"
    ax.xaxis.set_major_formatter(mdates.DateFormatter(clock_format, tz=zone))  # type: ignore[no-untyped-call]
    unit = _unit(panel)
    if panel.get("fieldConfig", {}).get("defaults", {}).get("decimals") == 0:  # counts: no half an e-bike
        ax.yaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    _unit_ticks(ax.yaxis, unit)
    ax.tick_params(labelsize=8)
    _room_at_left(ax, [_with_unit(v, unit) for v in ax.get_yticks()], 8)


def _barchart(ax: Axes, panel: dict[str, Any], frames: list[tuple[str, Series]]) -> None:
    by_state: dict[str, dict[str, float]] = {}
    for _, series in frames:
        counts = by_state.setdefault(series.columns[-1], {})
        for row in series.values:
            counts[series.tags.get("site", row[1] if len(row) > 2 else "")] = row[-1]
    # Sites down the side, so that every name reads across and none overlaps another.
    sites = sorted({site for counts in by_state.values() for site in counts}, reverse=True)
    left = [0.0] * len(sites)
    for state, counts in by_state.items():
        values = [float(counts.get(site, 0)) for site in sites]
        tint = _field_colour(panel, state, 0.0)
        ax.barh(sites, values, left=left, color=tint, label=_shown(panel, state))
        left = [b + v for b, v in zip(left, values, strict=True)]
    ax.set_ylim(-0.6, len(sites) - 0.4)
    rows = max(1, len(sites))
    shown = [_mapped(panel, "site", site) for site in sites]
    # A Chinese name fills its em, where a Latin one leaves room above and below: a smaller share.
    _names_at_left(ax, list(range(len(sites))), shown, fontsize=max(5.0, min(8.0, _points(ax, 0.85 / rows))))
    ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    _unit_ticks(ax.xaxis, _unit(panel))
    ax.tick_params(axis="x", labelsize=8)
    # Above the bars, beside the title, where it hides none of them.
    ax.legend(
        fontsize=8,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=max(1, len(by_state)),
        facecolor=PANEL,
        labelcolor=colour("text"),
        frameon=False,
    )


def _geomap(ax: Axes, panel: dict[str, Any], frames: list[tuple[str, Series]]) -> None:
    trucks = []
    for _, series in frames:
        lats, lons = series.column("lat"), series.column("lon")
        if "speed" in series.columns:  # the latest position
            ax.scatter(lons, lats, s=60, color=colour("blue"), zorder=3)
            trucks.append((_mapped(panel, "device", series.tags.get("device", "")), lons[-1], lats[-1]))
        else:  # the road it drove
            ax.plot(lons, lats, color=colour("blue"), alpha=0.4, linewidth=1)
    ax.set_aspect(1 / math.cos(math.radians(31.2)))  # metres the same both ways at Shanghai's latitude
    ax.tick_params(labelsize=7)
    # Where the points land on the canvas is known once the limits and the aspect are applied.
    ax.autoscale_view()
    ax.apply_aspect()
    _labels_apart(ax, trucks, fontsize=7)


def _labels_apart(ax: Axes, labels: list[tuple[str, float, float]], fontsize: float) -> list[Text]:
    """Each label beside its point, moved a line down at a time until it overlaps no label placed
    before it: trucks standing together at the depot read as a list, not as one smudge."""
    renderer = ax.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    placed: list[Bbox] = []
    texts: list[Text] = []
    for text, x, y in sorted(labels, key=lambda label: (-label[2], label[1], label[0])):
        for line in range(len(labels) + 1):
            label = ax.annotate(
                text,
                (x, y),
                xytext=(7, 2 - line * (fontsize + 2)),
                textcoords="offset points",
                color=colour("text"),
                fontsize=fontsize,
                va="bottom",
                zorder=4,  # over the roads and the markers
                bbox={"boxstyle": "square,pad=0.1", "facecolor": PANEL, "edgecolor": "none", "alpha": 0.8},
            )
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            label.remove()
        placed.append(box)
        texts.append(label)
    return texts


def _table(ax: Axes, panel: dict[str, Any], frames: list[tuple[str, Series]]) -> None:
    """Rows as text: the group's tags, then each value column, each column as wide as its widest cell."""
    ax.set_xticks([])
    ax.set_yticks([])
    header: list[str] = []
    rows: list[list[str]] = []
    for _, series in frames:
        keep = [i for i, c in enumerate(series.columns) if c != "time"]
        names = [*series.tags, *(series.columns[i] for i in keep)]
        header = header or [_shown(panel, n) for n in names]
        for values in series.values:
            cells = [*series.tags.values(), *(values[i] for i in keep)]
            rows.append([_cell(panel, n, v) for n, v in zip(names, cells, strict=True)])
    if not header:
        return
    shown = [header, *rows[:11]]
    widths = [max(_columns(row[i]) for row in shown) + 2 for i in range(len(header))]
    # Each column starts where the widths before it end, so CJK and Latin cells line up.
    unit = 0.98 / sum(widths)
    starts = [0.01 + unit * sum(widths[:i]) for i in range(len(widths))]
    for n, row in enumerate(shown):
        for x, text in zip(starts, row, strict=True):
            ax.text(
                x, 0.95 - n * 0.08, text, color=colour("text"), fontsize=9, transform=ax.transAxes, va="top"
            )


def render(
    dashboard: dict[str, Any],
    source: Source,
    out: Path,
    *,
    locale: Locale = DEFAULT_LOCALE,
    width: int = 1920,
    height: int = 1080,
) -> Path:
    """Draw the dashboard into a PNG at `out`."""
    fig = draw(dashboard, source, locale=locale, width=width, height=height)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, facecolor=BACKGROUND)
    plt.close(fig)
    return out


def draw(
    dashboard: dict[str, Any],
    source: Source,
    *,
    locale: Locale = DEFAULT_LOCALE,
    width: int = 1920,
    height: int = 1080,
) -> Figure:
    """The dashboard as a matplotlib figure, every text in Noto Sans CJK (the caller closes it)."""
    with plt.rc_context({"font.family": [cjk_family()]}):
        fig = plt.figure(figsize=(width / 100, height / 100), dpi=100, facecolor=BACKGROUND)
        title_h = 0.04  # the screen's own title line
        for panel in dashboard["panels"]:
            g = panel["gridPos"]
            left, w = g["x"] / 24, g["w"] / 24
            top, h = g["y"] / GRID_ROWS * (1 - title_h), g["h"] / GRID_ROWS * (1 - title_h)
            # Axes with tick figures below them stand higher, so the figures clear the next row's title.
            below = 0.022 if panel["type"] in {"timeseries", "barchart", "geomap"} else 0.0
            bottom = 1 - title_h - top - h + 0.006
            ax = fig.add_axes((left + 0.004, bottom + below, w - 0.008, h - 0.036 - below), facecolor=PANEL)
            # The title at the panel's corner, wherever the axes move to make room for labels.
            fig.text(
                left + 0.004, bottom + h - 0.026, panel.get("title", ""), color=colour("text"), fontsize=11
            )
            for spine in ax.spines.values():
                spine.set_color("#2c3235")
            ax.tick_params(colors=colour("text"))
            frames = source.frames(panel)
            kind = panel["type"]
            if kind == "stat":
                ax.set_xticks([])
                ax.set_yticks([])
                _stat(ax, panel, frames)
            elif kind == "bargauge":
                _bargauge(ax, panel, frames)
            elif kind == "timeseries":
                _timeseries(ax, panel, frames, source.zone)
            elif kind == "barchart":
                _barchart(ax, panel, frames)
            elif kind == "geomap":
                _geomap(ax, panel, frames)
            elif kind == "table":
                _table(ax, panel, frames)
        fig.text(
            0.005,
            0.985,
            f"{dashboard['title']}   {clock(source.end_ms / 1000, locale, zone=str(source.zone))}",
            color=colour("text"),
            fontsize=14,
            va="top",
        )
    return fig
