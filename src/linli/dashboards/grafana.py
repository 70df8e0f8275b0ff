"""`linli dashboards push`: the folder, the data source and every dashboard, through Grafana's API.

Idempotent: the folder and data source are created when missing and updated otherwise,
and dashboards are saved with `overwrite`, so a second push changes nothing but versions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from linli.dashboards.influxql import DATASOURCE

log = logging.getLogger(__name__)

FOLDER_UID = "linli"
FOLDER_TITLE = "linli"
DATASOURCE_NAME = "linli InfluxDB"


class PushError(Exception):
    """Grafana refused or could not be reached; the message says which call and why."""


@dataclass(frozen=True)
class Store:
    """Where Grafana reads the data: InfluxDB's URL as Grafana sees it, the database (or bucket), a token."""

    url: str
    database: str
    token: str | None = None


def datasource(store: Store) -> dict[str, Any]:
    """The data source as the API takes it; the same as the provisioning file."""
    out: dict[str, Any] = {
        "name": DATASOURCE_NAME,
        "uid": DATASOURCE.uid,
        "type": "influxdb",
        "access": "proxy",
        "url": store.url,
        "isDefault": True,
        "jsonData": {"dbName": store.database, "httpMode": "POST"},
    }
    if store.token:
        out["jsonData"]["httpHeaderName1"] = "Authorization"
        out["secureJsonData"] = {"httpHeaderValue1": f"Token {store.token}"}
    return out


def push(url: str, token: str, store: Store, dashboards: dict[str, dict[str, Any]]) -> list[str]:
    """Upload everything; returns what was done, one line per call."""
    api = GrafanaApi.from_url(url, credential=token)
    done = []
    try:
        done.append(_ensure_folder(api))
        done.append(_ensure_datasource(api, datasource(store)))
        for uid, data in dashboards.items():
            body = {
                "dashboard": {k: v for k, v in data.items() if k != "id"},
                "folderUid": FOLDER_UID,
                "overwrite": True,
                "message": "linli dashboards push",
            }
            result = api.dashboard.update_dashboard(body)
            done.append(f"dashboard {uid}: saved, version {result.get('version', '?')}")
    except GrafanaException as exc:
        raise PushError(f"Grafana at {url} answered {exc.status_code}: {exc.message}") from exc
    except OSError as exc:
        raise PushError(f"Grafana at {url} could not be reached: {exc}") from exc
    return done


def _missing(exc: GrafanaClientError) -> bool:
    return bool(exc.status_code == 404)


def _ensure_folder(api: GrafanaApi) -> str:
    try:
        api.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        return f"folder {FOLDER_UID}: created"
    return f"folder {FOLDER_UID}: present"


def _ensure_datasource(api: GrafanaApi, body: dict[str, Any]) -> str:
    try:
        api.datasource.get_datasource_by_uid(body["uid"])
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.datasource.create_datasource(body)
        return f"data source {body['uid']}: created"
    api.datasource.update_datasource_by_uid(body["uid"], body)
    return f"data source {body['uid']}: updated"
