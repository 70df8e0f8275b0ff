"""Real servers for the tests: started on free loopback ports, stopped at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, create_engine

from linli.demo import servers as local_servers
from linli.demo.servers import (
    LocalServer,
    ServerMissingError,
    free_port,
    postgresql_url,
    start_influxdb1,
    start_mosquitto,
    start_postgresql,
    start_victoria_metrics,
)
from peers import Inbox, Receiver
from support import create_database, outside_pytest_tmp, shipped_queue_settings, unique


def _start(starter: object, tmp: pytest.TempPathFactory, name: str) -> LocalServer:
    assert callable(starter)
    try:
        server: LocalServer = starter(tmp.mktemp(name))
    except ServerMissingError as exc:
        # Never skip: a missing server means the suite did not test what it claims.
        pytest.fail(str(exc), pytrace=False)
    return server


# The fixtures that start a server: a test that uses one is marked `servers` for it.
SERVER_FIXTURES = {"victoria", "influx1", "mosquitto", "postgresql", "pg_database", "pg_folder"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `servers` every test that starts a server through a fixture (or the PostgreSQL
    half of the `state` fixture), so that `scripts/test --fast` leaves it out."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgresql = callspec is not None and callspec.params.get("state") == "postgresql"
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or on_postgresql:
            item.add_marker(pytest.mark.servers)


@pytest.fixture(autouse=True)
def servers_only_where_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked `servers` can start no server and no process (a `linli` command, a
    client binary): the fast tier stays fast, and the mark stays true."""
    if request.node.get_closest_marker("servers") is not None:
        return

    def refuse(name: object, *args: object, **kwargs: object) -> Any:
        raise AssertionError(
            f"this test starts {name}: mark it `servers` (pytestmark = pytest.mark.servers in its "
            "module, or on the test), so that `scripts/test --fast` leaves it out"
        )

    monkeypatch.setattr(local_servers, "_spawn", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's agents keep their durable buffer in the test's own folder."""
    monkeypatch.setenv("LINLI_STATE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = _start(start_victoria_metrics, tmp_path_factory, "victoria-metrics")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def influx1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = _start(start_influxdb1, tmp_path_factory, "influxdb1")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    settings = shipped_queue_settings()
    assert "max_queued_messages 0" in settings, "the shipped config must not cap QoS 1 queues at 1000"
    server = _start(
        lambda datadir: start_mosquitto(datadir, extra_config=settings), tmp_path_factory, "mosquitto"
    )
    yield server
    server.stop()


def _start_postgresql(datadir: Path) -> LocalServer:
    """A new cluster; a copy of the one LINLI_TEST_PG_CLUSTER names, if set: scripts/mutation
    makes one for its run, where every mutant tested is a session of its own and initdb
    took most of each mutant's time."""
    template = os.environ.get("LINLI_TEST_PG_CLUSTER")
    if not template:
        return start_postgresql(datadir)
    datadir.mkdir(parents=True)
    subprocess.run(["cp", "-a", template, str(datadir / "cluster")], check=True)  # its owner kept
    for folder in (datadir, datadir.parent):  # the server's user must reach its cluster
        folder.chmod(folder.stat().st_mode | 0o011)
    if os.geteuid() == 0:
        shutil.chown(datadir, "postgres")
    return start_postgresql(datadir, init=False)


@pytest.fixture(scope="session")
def postgresql() -> Iterator[LocalServer]:
    with outside_pytest_tmp("linli-pg-") as folder:
        try:
            server = _start_postgresql(folder / "postgresql")
        except ServerMissingError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server
        server.stop()


@pytest.fixture
def pg_database(postgresql: LocalServer) -> Iterator[tuple[str, Engine]]:
    """A fresh database: its URL as a config names it, and an engine for the test's own locks."""
    name = unique("races").replace("-", "_")
    create_database(postgresql_url(postgresql), name)
    engine = create_engine(postgresql_url(postgresql, name))
    yield postgresql_url(postgresql, name).replace("+psycopg", ""), engine
    engine.dispose()


@pytest.fixture
def pg_folder() -> Iterator[Path]:
    """Where a test's own PostgreSQL keeps its cluster (see `outside_pytest_tmp`)."""
    with outside_pytest_tmp("linli-pg-") as folder:
        yield folder


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A central service's state, fresh: an SQLite file, or a new database on the test PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite")
    server: LocalServer = request.getfixturevalue("postgresql")
    name = unique("state").replace("-", "_")
    create_database(postgresql_url(server), name)
    return postgresql_url(server, name).replace("+psycopg", "")  # as a config file names it


@pytest.fixture
def peers() -> Iterator[tuple[Receiver, Inbox, int]]:
    receiver, inbox = Receiver(), Inbox()
    smtp_port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    yield receiver, inbox, smtp_port
    controller.stop()
    receiver.close()
