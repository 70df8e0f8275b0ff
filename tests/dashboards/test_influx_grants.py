"""docs/security.md's InfluxDB 1.x users and grants, run against a real InfluxDB with auth on:
the edge writes and cannot read, Grafana reads and cannot write."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import pytest

from linli.cloud.waste.store import StoreError, write_lines
from linli.dashboards.influxv1 import QueryError, run
from linli.demo.servers import LocalServer, start_influxdb1
from linli.edge.config import WriterConfig
from linli.edge.sinks import InfluxV1Sink, WriteError

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
PASSWORDS = {
    "ADMIN_PASSWORD": "adm-pw",
    "EDGE_PASSWORD": "edge-pw",
    "GRAFANA_PASSWORD": "gf-pw",
    "WASTE_PASSWORD": "w-pw",
}


def documented_statements() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"```sql\n(.*?)```", text, re.S)
    assert block, "docs/security.md has no sql block"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    out = []
    for line in lines:
        filled = line
        for placeholder, password in PASSWORDS.items():
            filled = filled.replace(placeholder, password)
        out.append(filled)
    return out


def query(
    url: str, q: str, user: str | None = None, password: str = "", method: str = "POST"
) -> tuple[int, str]:
    params = urllib.parse.urlencode({"q": q, "db": "linli"})
    if method == "GET":  # a SELECT; statements that change things must be POSTed
        req = urllib.request.Request(f"{url}/query?{params}")  # noqa: S310 (loopback)
    else:
        req = urllib.request.Request(f"{url}/query", data=params.encode(), method="POST")  # noqa: S310
    if user is not None:
        req.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = start_influxdb1(tmp_path_factory.mktemp("influx-auth"), auth=True)
    statements = documented_statements()
    # The first statement makes the admin, which an empty server allows without a user.
    code, body = query(server.url, statements[0])
    assert code == 200, body
    for statement in statements[1:]:
        code, body = query(server.url, statement, "admin", PASSWORDS["ADMIN_PASSWORD"])
        assert code == 200, (statement, body)
        assert '"error"' not in body, (statement, body)
    yield server
    server.stop()


def write(url: str, user: str, password: str, line: bytes) -> int | None:
    """The edge's own writer (InfluxV1Sink), as that user: None when stored, else the HTTP status."""
    config = WriterConfig.model_validate(
        {"kind": "influxdb1", "url": url, "database": "linli", "username_env": "U", "password_env": "P"}
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("U", user)
        env.setenv("P", password)
        try:
            InfluxV1Sink(config).write(line)
        except WriteError as exc:
            return exc.status
    return None


def test_the_edge_writes_and_cannot_read(influx: LocalServer) -> None:
    assert write(influx.url, "edge", "edge-pw", b"charger,site=s1,device=d1 power=1.5 1700000000000") is None
    code, body = query(influx.url, 'SELECT * FROM "charger"', "edge", "edge-pw", method="GET")
    assert code == 403, body
    assert "not authorized" in body
    # What it wrote is there, read by an admin.
    code, body = query(influx.url, 'SELECT power FROM "charger"', "admin", "adm-pw", method="GET")
    assert code == 200, body
    assert json.loads(body)["results"][0]["series"][0]["values"][0][1] == 1.5
    assert write(influx.url, "edge", "wrong", b"charger,site=s1,device=d1 power=2 1700000000001") == 401


def test_grafana_reads_and_cannot_write(influx: LocalServer) -> None:
    assert write(influx.url, "edge", "edge-pw", b"charger,site=s1,device=d2 power=3 1700000000002") is None
    code, body = query(
        influx.url, "SELECT power FROM \"charger\" WHERE device = 'd2'", "grafana", "gf-pw", method="GET"
    )
    assert code == 200, body
    assert json.loads(body)["results"][0]["series"][0]["values"][0][1] == 3
    assert write(influx.url, "grafana", "gf-pw", b"charger,site=s1,device=d3 power=9 1700000000003") == 403
    # Nor may it change the database through a query.
    code, body = query(influx.url, 'DROP MEASUREMENT "charger"', "grafana", "gf-pw")
    assert code == 403, body


@pytest.mark.servers
def test_the_edge_check_contacts_the_store_as_the_write_only_user(
    influx: LocalServer, tmp_path: Path
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[writer]\nkind = "influxdb1"\nurl = "{influx.url}"\ndatabase = "linli"\n\n'
        '[[sites]]\nid = "s1"\n[[sites.devices]]\nid = "station-1"\nprofile = "charger"\nport = 1\n'
    )
    env = {**os.environ, "LINLI_INFLUX_USERNAME": "edge", "LINLI_INFLUX_PASSWORD": "edge-pw"}
    checked = subprocess.run(
        [sys.executable, "-m", "linli.cli", "edge", "check", "--config", str(config), "--contact"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    env["LINLI_INFLUX_PASSWORD"] = "not-the-password"  # noqa: S105
    refused = subprocess.run(
        [sys.executable, "-m", "linli.cli", "edge", "check", "--config", str(config), "--contact"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "store: REFUSED" in refused.stdout + refused.stderr


def test_the_waste_service_writes_and_reads_as_its_user(influx: LocalServer) -> None:
    """The waste service's store takes InfluxDB 1.x's `user:password` (LINLI_INFLUX_TOKEN) and
    sends it as HTTP Basic: as `Token user:password`, Debian's InfluxDB 1.6 refuses it
    ("unable to parse authentication credentials"), and nothing the service wrote was stored."""
    line = "waste_trip,route=r1 served=3i 1700000000003"
    waste, wrong = f"waste:{PASSWORDS['WASTE_PASSWORD']}", "waste:wrong"
    write_lines(influx.url, "linli", [line], token=waste)
    rows = run(influx.url, "linli", 'SELECT served FROM "waste_trip"', token=waste)
    assert rows[0].values == [[1700000000003, 3]]
    with pytest.raises(StoreError, match="HTTP 401"):
        write_lines(influx.url, "linli", [line], token=wrong)
    with pytest.raises(QueryError, match="401"):
        run(influx.url, "linli", 'SELECT served FROM "waste_trip"', token=wrong)
