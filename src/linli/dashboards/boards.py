"""Every dashboard linli ships: built from code, checked against the schema, written as JSON.

The committed JSON is in the district's locale (zh-CN); any other is built on request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from linli.catalog.i18n import DEFAULT_LOCALE, Locale
from linli.dashboards import chargers, edge, elevators, fire, schema, screen, waste
from linli.dashboards.words import in_locale

BOARDS: dict[str, Callable[[], db.Dashboard]] = {
    screen.UID: screen.dashboard,
    chargers.UID: chargers.dashboard,
    elevators.UID: elevators.dashboard,
    fire.UID: fire.dashboard,
    waste.UID: waste.dashboard,
    edge.UID: edge.dashboard,
}
# The committed JSON, beside this package in a source checkout.
JSON_DIR = Path(__file__).resolve().parents[3] / "dashboards" / "json"


def json_dir(locale: Locale = DEFAULT_LOCALE) -> Path:
    """Where the committed JSON of `locale` is: the default's at the top, another's in its own folder."""
    return JSON_DIR if locale == DEFAULT_LOCALE else JSON_DIR / locale


class InvalidDashboardError(Exception):
    """A dashboard the schema rejects; the message lists every problem."""


def models(locale: Locale = DEFAULT_LOCALE) -> dict[str, model.Dashboard]:
    """Every dashboard as the SDK's model in `locale` (its queries keep what they read, for the tests)."""
    with in_locale(locale):
        return {uid: build().build() for uid, build in BOARDS.items()}


def to_json(dashboard: model.Dashboard) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(dashboard, cls=JSONEncoder))
    return data


def render_all(locale: Locale = DEFAULT_LOCALE) -> dict[str, str]:
    """File name -> JSON text of every dashboard in `locale`, checked against the schema first."""
    out = {}
    for uid, dashboard in models(locale).items():
        data = to_json(dashboard)
        found = schema.problems(data)
        if found:
            raise InvalidDashboardError(f"{uid}: " + "; ".join(found))
        out[f"{uid}.json"] = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    return out


def write(out_dir: Path, locale: Locale = DEFAULT_LOCALE) -> list[Path]:
    """Write every dashboard's JSON; remove none (other files in the folder are the operator's)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all(locale).items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(out_dir: Path, locale: Locale = DEFAULT_LOCALE) -> list[str]:
    """The dashboards whose JSON in `out_dir` differs from what the code builds."""
    found = []
    for name, text in render_all(locale).items():
        path = out_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            found.append(name)
    return found
