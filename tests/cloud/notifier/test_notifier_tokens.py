"""The notifier API's scoped tokens, made with `linli cloud token`, and its audit log."""

from __future__ import annotations

import getpass
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from linli.cloud.db import open_state
from linli.cloud.notifier.api import app
from linli.cloud.notifier.channels import Sender
from linli.cloud.notifier.config import SmtpConfig, load_notifier_config
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.store import Store
from linli.cloud.tokens import TokenBook
from support import linli, serving
from test_notifier import alert

pytestmark = pytest.mark.servers  # every test here starts a server or a process

LEGACY = "legacy-s3cret"  # the test's own $LINLI_CLOUD_TOKEN
SUBSCRIPTION = {"id": "ops", "channels": [{"kind": "email", "to": ["ops@district.example"]}]}


def create(config: Path, scope: str, name: str) -> str:
    made = linli("cloud", "token", "create", "--config", str(config), "--scope", scope, "--name", name)
    assert made.returncode == 0, made.stderr
    assert "shown this once" in made.stderr
    return made.stdout.strip()


@pytest.fixture
def served(tmp_path: Path, state: str) -> Iterator[tuple[str, Path, Notifier]]:
    config_path = tmp_path / "notifier.toml"
    config_path.write_text(f'state = "{state}"\n')
    config = load_notifier_config(config_path)
    notifier = Notifier(config, Store(config.state), Sender(SmtpConfig()), time.time)
    with serving(app(notifier, LEGACY, TokenBook(config.state))) as base:
        yield base, config_path, notifier


def call(base: str, token: str, method: str, path: str, body: object = None) -> httpx.Response:
    return httpx.request(
        method, base + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_each_scope_does_its_job_and_no_more(served: tuple[str, Path, Notifier]) -> None:
    base, config, notifier = served
    screen = create(config, "read", "big screen")
    duty, admin = create(config, "ack", "duty officer"), create(config, "admin", "ops")
    firing = alert()
    notifier.handle(firing)
    ack = f"/alerts/{firing.fingerprint}/ack"
    # read: the screen reads, and nothing else.
    assert call(base, screen, "GET", "/alerts").status_code == 200
    refused = call(base, screen, "POST", ack, {"by": "screen"})
    assert refused.status_code == 403
    assert refused.json()["detail"] == "token 'big screen' has scope 'read'; this needs 'ack'"
    assert call(base, screen, "GET", "/audit").status_code == 403
    # ack: acknowledges, cannot change subscriptions.
    assert call(base, duty, "POST", ack, {"by": "Wang Wei"}).json()["acked_by"] == "Wang Wei"
    assert call(base, duty, "PUT", "/subscriptions/ops", SUBSCRIPTION).status_code == 403
    assert call(base, duty, "DELETE", "/subscriptions/ops").status_code == 403
    # admin, and the old single token, may do everything.
    assert call(base, admin, "PUT", "/subscriptions/ops", SUBSCRIPTION).status_code == 200
    assert call(base, LEGACY, "DELETE", "/subscriptions/ops").status_code == 204
    # Strangers and near misses.
    assert httpx.get(base + "/alerts", timeout=10).status_code == 401
    for wrong in (
        "nope",
        screen[:-1] + ("A" if screen[-1] != "A" else "B"),
        "linli_000000000000_" + "x" * 43,
    ):
        assert call(base, wrong, "GET", "/alerts").status_code == 401, wrong


def test_a_revoked_token_is_refused_at_once_and_the_audit_log_says_who_did_what(
    served: tuple[str, Path, Notifier],
) -> None:
    base, config, notifier = served
    duty, admin = create(config, "ack", "duty officer"), create(config, "admin", "ops")
    firing = alert()
    notifier.handle(firing)
    assert call(base, duty, "GET", "/alerts").status_code == 200
    assert (
        call(base, duty, "POST", f"/alerts/{firing.fingerprint}/ack", {"by": "Wang Wei"}).status_code == 200
    )
    assert call(base, admin, "PUT", "/subscriptions/ops", SUBSCRIPTION).status_code == 200
    revoked = linli("cloud", "token", "revoke", "--config", str(config), "--name", "duty officer")
    assert revoked.returncode == 0, revoked.stderr
    assert call(base, duty, "GET", "/alerts").status_code == 401  # the running API refuses it now
    again = linli("cloud", "token", "revoke", "--config", str(config), "--name", "duty officer")
    assert again.returncode == 1
    assert "no live token named 'duty officer'" in again.stderr
    log = call(base, admin, "GET", "/audit").json()
    cli = f"cli:{getpass.getuser()}"
    assert [(e["who"], e["action"], e["target"]) for e in reversed(log)] == [
        (cli, "token_create", "duty officer"),
        (cli, "token_create", "ops"),
        ("duty officer", "ack", firing.fingerprint),
        ("ops", "put_subscription", "ops"),
        (cli, "token_revoke", "duty officer"),
    ]
    assert log[2]["detail"] == "by Wang Wei"
    listed = call(base, admin, "GET", "/tokens").json()
    assert {(t["name"], t["scope"], t["revoked_ms"] is None) for t in listed} == {
        ("duty officer", "ack", False), ("ops", "admin", True),
    }  # fmt: skip
    assert all(admin not in str(t) and duty not in str(t) for t in listed)  # never the secret
    engine = open_state(load_notifier_config(config).state)
    with engine.begin() as db:
        stored = [
            tuple(row)
            for table in ("api_token", "audit")
            for row in db.execute(text(f"SELECT * FROM {table}"))
        ]
    engine.dispose()
    assert stored
    assert not any(admin in str(row) or admin.encode() in row for row in stored)  # only its hash


def test_the_cli_refuses_clearly(served: tuple[str, Path, Notifier]) -> None:
    _, config, _ = served
    create(config, "read", "screen")
    twice = linli("cloud", "token", "create", "--config", str(config), "--scope", "read", "--name", "screen")
    assert twice.returncode == 2
    assert "a token named 'screen' exists" in twice.stderr
    bad = linli("cloud", "token", "create", "--config", str(config), "--scope", "root", "--name", "x")
    assert bad.returncode == 2
    assert "invalid choice: 'root'" in bad.stderr


def test_metrics_and_health_for_a_read_token(served: tuple[str, Path, Notifier]) -> None:
    base, config, notifier = served
    screen, duty = create(config, "read", "prometheus"), create(config, "ack", "duty officer")
    firing = alert()
    notifier.handle(firing)

    def scrape() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        text = call(base, screen, "GET", "/metrics").text
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return out

    before = scrape()
    assert before["linli_notifier_events_total"][(("kind", "charger"),)] == 1
    assert before["linli_notifier_alerts_open"][(("severity", "critical"),)] == 1
    assert before["linli_notifier_alerts_unacknowledged"][()] == 1
    assert before["process_resident_memory_bytes"][()] > 0
    assert call(base, duty, "POST", f"/alerts/{firing.fingerprint}/ack", {"by": "Li"}).status_code == 200
    assert scrape()["linli_notifier_alerts_unacknowledged"][()] == 0
    health = call(base, screen, "GET", "/health").json()
    assert (health["alerts_open"], health["alerts_unacknowledged"], health["events"]) == (1, 0, 1)
