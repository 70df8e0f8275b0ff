"""Helpers for tests against real servers and simulator processes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from linli.catalog.profile import Profile
from linli.catalog.registers import Value, compile_decoder
from linli.cloud.broker.configs import QUEUES
from linli.cloud.notifier.config import DeliveryConfig
from linli.dashboards.influxv1 import run as run_influxql
from linli.demo.servers import LocalServer, free_port, start_influxdb1
from linli.edge.agent import Agent
from linli.edge.config import EdgeConfig
from linli.sim.image import build_image

_counter = itertools.count(1)
# The tests' receivers are on loopback: a service's config must allow private addresses.
LOOPBACK = DeliveryConfig(allow_private=True)


def shipped_queue_settings() -> str:
    """The queue limits of the Mosquitto config linli writes, so the tests run with them."""
    return QUEUES


def linli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "linli.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def unique(prefix: str) -> str:
    """A name no other test in this run uses (tests share session-wide servers)."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def http_get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback test servers)
        data: bytes = resp.read()
        return data


def http_post(url: str, body: bytes = b"", timeout: float = 10.0) -> bytes:
    req = urllib.request.Request(url, data=body, method="POST")  # noqa: S310
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        data: bytes = resp.read()
        return data


def vm_series(url: str, metric_regex: str, site: str) -> list[dict[str, Any]]:
    """Every stored series of VictoriaMetrics matching, with all raw samples (duplicates kept)."""
    http_get(f"{url}/internal/force_flush")
    query = urllib.parse.urlencode({"match[]": f'{{__name__=~"{metric_regex}",site="{site}"}}'})
    lines = http_get(f"{url}/api/v1/export?{query}").decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def vm_series_settled(
    url: str, metric_regex: str, site: str, samples: int, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """vm_series once at least `samples` samples are searchable (VictoriaMetrics shows writes
    up to a couple of seconds late, even after a forced flush); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        series = vm_series(url, metric_regex, site)
        if sum(len(s["timestamps"]) for s in series) >= samples or time.monotonic() > deadline:
            return series
        time.sleep(0.1)


def influx1_create_db(url: str, db: str) -> None:
    http_post(f"{url}/query?" + urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'}))


def influx1_down(datadir: Path, prefix: str) -> tuple[LocalServer, str]:
    """An InfluxDB 1.x that is stopped, with a database made first: restart it with
    `start_influxdb1(server.datadir, server.port)`."""
    server = start_influxdb1(datadir)
    db = unique(prefix)
    influx1_create_db(server.url, db)
    server.stop()
    return server, db


def influx1_query(url: str, db: str, q: str) -> list[dict[str, Any]]:
    """Rows as dicts (one per point), across all returned series; QueryError if refused."""
    rows = []
    for series in run_influxql(url, db, q):
        for values in series.values:
            row = dict(zip(series.columns, values, strict=True))
            row.update(series.tags)
            rows.append(row)
    return rows


def start_sim(*args: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`linli sim ...` as a process, returned once it says it listens; `env` adds variables."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "linli.cli", "sim", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if "linli sim" not in line:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"simulator did not start: {line!r} {err}")
    return proc


def linli_logged(log: Path, token: str, *args: str) -> subprocess.Popen[bytes]:
    """`linli ARGS` as a process (a central service), its output in `log`, its API's token set."""
    env = {**os.environ, "LINLI_CLOUD_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        cmd = [sys.executable, "-m", "linli.cli", *args]
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop_logged(procs: list[subprocess.Popen[bytes]], logs: list[Path], tail: int = 25) -> None:
    """Stop `linli_logged` processes, and print the end of each log (what a failure is read by)."""
    for proc in procs:
        proc.terminate()
        proc.wait(15)
    for log in logs:
        if log.exists():
            print(f"--- {log.stem}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-tail:]))


def stop_process(proc: subprocess.Popen[str], timeout: float = 10.0) -> int:
    proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@asynccontextmanager
async def running(config: EdgeConfig) -> AsyncIterator[Agent]:
    """An agent running with MQTT devices, once subscribed; stopped (and flushed) on exit."""
    agent = Agent(config)
    assert agent.mqtt is not None
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await wait_until(agent.mqtt.subscribed.is_set, 10, "the agent's subscriptions")
    try:
        yield agent
    finally:
        stop.set()
        assert await task


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for a condition the code under test makes true; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@contextmanager
def serving(asgi: Any) -> Iterator[str]:
    """An ASGI app served by uvicorn on a free port in a thread, as the services serve it."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), "the API to listen", timeout=10)
    assert server.started, "the API did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def waste_in_thread(service: Any) -> Iterator[asyncio.AbstractEventLoop]:
    """A `WasteService` running on its own event loop in a thread, from started until its
    deliveries are drained and it has stopped."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    runner = threading.Thread(target=loop.run_until_complete, args=(service.run(stop),), daemon=True)
    runner.start()
    try:
        started = asyncio.run_coroutine_threadsafe(asyncio.wait_for(service.started.wait(), 15), loop)
        assert started.result(20) is True
        yield loop
    finally:
        asyncio.run_coroutine_threadsafe(service.engine.deliveries.drain(10), loop).result(15)
        loop.call_soon_threadsafe(stop.set)
        runner.join(30)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """`wait_until` for code without an event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def expected_fields(
    profile: Profile, values: dict[tuple[int | None, str], Value], count: int
) -> dict[int | None, dict[str, Value]]:
    """What a correct poller must read: the model's values through the register map and back."""
    image = build_image(profile, values, count)
    assert profile.modbus is not None
    out: dict[int | None, dict[str, Value]] = {}
    for channel, point in profile.modbus_points(count):
        decoder = compile_decoder(point, profile.modbus.byte_order, profile.modbus.word_order)
        out.setdefault(channel, {})[point.field] = decoder(image[point.table], point.address)
    return out


def create_database(url: str, name: str) -> None:
    """CREATE DATABASE on a PostgreSQL server (`url` names any database there)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


@contextmanager
def outside_pytest_tmp(prefix: str) -> Iterator[Path]:
    """A folder of its own under the system's temporary folder, removed afterwards.

    For PostgreSQL's cluster: as root, PostgreSQL runs as its own user, which must reach its
    files through every folder above them, and every pytest session that starts makes its
    per-user folder private again (0700), cutting a running server off (it shuts down).
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def protective_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """What a response of linli's APIs says against framing, sniffing and foreign content;
    `assert protective_headers(r.headers) == {}` lists what is missing or wrong."""
    wrong = {}
    if headers.get("x-content-type-options") != "nosniff":
        wrong["x-content-type-options"] = str(headers.get("x-content-type-options"))
    if headers.get("x-frame-options") != "DENY":
        wrong["x-frame-options"] = str(headers.get("x-frame-options"))
    csp = headers.get("content-security-policy", "")
    if "frame-ancestors 'none'" not in csp or "default-src 'none'" not in csp or "http" in csp:
        wrong["content-security-policy"] = csp
    return wrong
