"""The notifier as a running service: the MQTT feed, the clock tick, deliveries and the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

import uvicorn
from sqlalchemy import Engine, event

from linli.cloud.db import open_state
from linli.cloud.notifier.api import app
from linli.cloud.notifier.channels import Sender
from linli.cloud.notifier.config import NotifierConfig
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.mqtt import AlertFeed
from linli.cloud.notifier.store import Store
from linli.cloud.tokens import TokenBook

log = logging.getLogger(__name__)

TICK_S = 0.5


def commit_without_fsync(engine: Engine) -> None:
    """An SQLite state commits without an fsync each time (WAL, `synchronous=NORMAL`).

    An alert takes about six transactions on its way (its opening, the claim of its message,
    its release...), and on a busy disk each fsync took 5 to 20 ms: most of an alert's time in
    the notifier, and a backlog of seconds at 50 alerts a second (docs/benchmarks.md). A
    notifier that crashes loses nothing so; a power cut may take back its last transactions,
    which the edges make good: they announce every firing alert again each `resend_s`, and each
    resolution several times, so such an alert is told late or twice, never lost.
    """
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _normal_sync)
        engine.dispose()  # the connection the migration left in the pool is made again with it


def _normal_sync(dbapi_connection: Any, _record: object) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


class Service:
    """Everything `linli cloud run` starts; `started` is set once the API listens and the feed subscribed."""

    def __init__(self, config: NotifierConfig, token: str) -> None:
        self.config = config
        engine = open_state(config.state)
        commit_without_fsync(engine)
        self.store = Store(engine)
        self.tokens = TokenBook(engine)
        self.store.seed(config.subscriptions)
        self.sender = Sender(config.smtp, policy=config.delivery)
        self.notifier = Notifier(config, self.store, self.sender, time.time)
        self.token = token
        self.started = asyncio.Event()
        self.feed: AlertFeed | None = None  # while running

    def tick(self) -> None:
        """The notifier's tick, then its orphans' round. Each on its own: a tick that keeps
        failing must not stop the round, which renews the leases of what is still being sent.
        A failure is counted (the state may be unreadable for a moment) and tried next tick."""
        for step in (self.notifier.tick, self.notifier.send_orphans):
            try:
                step()
            except Exception as exc:
                self.notifier.count_failure("tick", "(all)", exc)

    async def run(self, stop: asyncio.Event) -> int:
        loop = asyncio.get_running_loop()
        feed = self.feed = AlertFeed(self.config.broker, loop, self.notifier.handle, self.notifier.reject)
        self.sender.publish = feed.publish
        server = uvicorn.Server(
            uvicorn.Config(
                app(self.notifier, self.token, self.tokens),
                host=self.config.api_host,
                port=self.config.api_port,
                log_level="warning",
                lifespan="off",  # the app has no startup or shutdown work
            )
        )
        api = asyncio.create_task(server.serve())
        feed.start()
        try:
            while not (server.started and feed.subscribed.is_set()):
                if api.done():
                    return 1  # the API could not listen; uvicorn said why
                await asyncio.sleep(0.05)
            log.info(
                "notifier: API on %s:%d; %d subscriptions",
                self.config.api_host,
                self.config.api_port,
                len(self.store.subscriptions()),
            )
            self.started.set()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=TICK_S)
                feed.retry()  # events the state could not take before
                self.tick()
        finally:
            feed.stop()
            server.should_exit = True
            await api
            await self.notifier.drain()
            await self.sender.close()
            self.store.close()
        return 0


def token_from_env(config: NotifierConfig) -> str:
    return os.environ.get(config.token_env, "")
