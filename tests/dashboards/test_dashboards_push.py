"""`linli dashboards push` against a local server that answers like Grafana's API and records each call."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from linli.cli.main import main
from linli.dashboards.boards import BOARDS


class FakeGrafana:
    """Folders, data sources and dashboards kept in memory; every request recorded."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls: list[tuple[str, str, dict[str, Any] | None, str]] = []
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}

    def answer(  # noqa: PLR0911 (one answer per endpoint)
        self, method: str, path: str, body: dict[str, Any] | None, auth: str
    ) -> tuple[int, object]:
        self.calls.append((method, path, body, auth))
        if auth != f"Bearer {self.token}":
            return 401, {"message": "invalid API key"}
        parts = path.removeprefix("/api/").split("/")
        if parts[0] == "folders":
            if method == "GET":
                return (
                    (200, self.folders[parts[1]])
                    if parts[1] in self.folders
                    else (404, {"message": "folder not found"})
                )
            assert body is not None
            self.folders[body["uid"]] = body
            return 200, body
        if parts[0] == "datasources":
            if method == "GET":
                found = self.datasources.get(parts[2])
                return (200, found) if found else (404, {"message": "Data source not found"})
            assert body is not None
            self.datasources[body["uid"]] = body
            return 200, {"message": "Datasource saved", "datasource": body}
        if path == "/api/dashboards/db" and method == "POST":
            assert body is not None
            uid = body["dashboard"]["uid"]
            if uid in self.dashboards and not body.get("overwrite"):
                return 412, {"message": "version-mismatch"}
            version = self.dashboards.get(uid, {}).get("version", 0) + 1
            self.dashboards[uid] = {**body, "version": version}
            return 200, {"status": "success", "uid": uid, "version": version}
        return 404, {"message": "Not found"}


@pytest.fixture
def grafana() -> Iterator[tuple[FakeGrafana, str]]:
    fake = FakeGrafana(TOKEN)

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, payload = fake.answer(
                self.command, self.path, body, self.headers.get("Authorization", "")
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _reply  # noqa: N815 (http.server's naming)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


TOKEN = "s3cret"  # noqa: S105 (the fake's own)


def push(url: str, token: str = TOKEN) -> int:
    args = ["--url", url, "--token", token, "--influx-url", "http://influxdb:8086", "--influx-token", "tok"]
    return main(["dashboards", "push", *args])


def test_push_creates_the_folder_and_data_source_then_saves_every_dashboard(
    grafana: tuple[FakeGrafana, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = grafana
    assert push(url) == 0
    calls = [(m, p) for m, p, _, _ in fake.calls]
    assert calls[:4] == [
        ("GET", "/api/folders/linli"),
        ("POST", "/api/folders"),
        ("GET", "/api/datasources/uid/linli-influxdb"),
        ("POST", "/api/datasources"),
    ]
    assert calls[4:] == [("POST", "/api/dashboards/db")] * len(BOARDS)
    assert all(auth == "Bearer s3cret" for *_, auth in fake.calls)
    source = fake.datasources["linli-influxdb"]
    assert source["type"] == "influxdb"
    assert source["jsonData"] == {"dbName": "linli", "httpMode": "POST", "httpHeaderName1": "Authorization"}
    assert source["secureJsonData"] == {"httpHeaderValue1": "Token tok"}
    assert set(fake.dashboards) == set(BOARDS)
    for saved in fake.dashboards.values():
        assert saved["folderUid"] == "linli"
        assert saved["overwrite"] is True
        assert "id" not in saved["dashboard"]  # Grafana's own id, never sent
    assert "dashboard linli-screen: saved, version 1" in capsys.readouterr().out


def test_a_second_push_updates_in_place(grafana: tuple[FakeGrafana, str]) -> None:
    fake, url = grafana
    assert push(url) == 0
    first = {uid: d["dashboard"] for uid, d in fake.dashboards.items()}
    fake.calls.clear()
    assert push(url) == 0
    calls = [(m, p) for m, p, _, _ in fake.calls]
    assert ("POST", "/api/folders") not in calls
    assert ("PUT", "/api/datasources/uid/linli-influxdb") in calls
    assert ("POST", "/api/datasources") not in calls
    assert {uid: d["dashboard"] for uid, d in fake.dashboards.items()} == first
    assert {d["version"] for d in fake.dashboards.values()} == {2}
    assert len(fake.folders) == 1
    assert len(fake.datasources) == 1


def test_a_refused_token_is_a_clear_error_and_exit_code_1(
    grafana: tuple[FakeGrafana, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = grafana
    assert push(url, token=TOKEN[::-1]) == 1
    err = capsys.readouterr().err
    assert "401" in err
    assert url in err
    assert fake.dashboards == {}


def test_an_unreachable_grafana_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert push("http://127.0.0.1:9") == 1
    assert "could not be reached" in capsys.readouterr().err
