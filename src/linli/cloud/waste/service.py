"""The waste service as `linli waste run` starts it: the trucks' feed, the engine, the
renovation planner, the store's outbox and the HTTP API, wired together.

The engine (`linli.cloud.waste.engine`) is the domain, on the trucks' clock; the feed
(`linli.cloud.waste.feed`) hands it the trucks' messages on the event loop and carries what
it publishes; the API (`linli.cloud.waste.api`) reads and commands it between two messages.
The service holds the engine (`engine`): it only makes the parts and runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time

import uvicorn

from linli.cloud.notifier.channels import Sender
from linli.cloud.tokens import TokenBook
from linli.cloud.waste.api import app
from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.engine import WasteEngine
from linli.cloud.waste.feed import TruckFeed
from linli.cloud.waste.planner import Planner
from linli.cloud.waste.state import WasteState
from linli.transit.gtfs import Feed, load_feed

log = logging.getLogger(__name__)

# How often a service looks for deliveries whose sender's lease ran out.
ORPHANS_EVERY_S = 5.0


class WasteService:
    """Everything `linli waste run` starts; `started` is set once it listens and subscribed.

    `engine` is the domain, with the state and sender made from the config; messages may also
    be handed to `engine.take` in-process (tests, benchmarks, the recording demo) without
    running the service."""

    def __init__(self, config: WasteConfig, token: str, feed: Feed | None = None) -> None:
        feed = feed or load_feed(config.gtfs)  # a timetable that does not load opens no state
        self.config = config
        self.sender = Sender(config.smtp, policy=config.delivery)
        self.state = WasteState(config.state)
        self.engine = WasteEngine(config, feed, self.state, self.sender, time.time)
        self.token = token
        self.tokens = TokenBook(self.state.engine)  # the API's, beside the token from the environment
        self.started = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> int:
        # What the service holds from its start (the modules, the timetable, the roads) is left
        # out of the collector's full passes, which took 0.2-0.5 s of the event loop in a flood
        # of bookings; and the planning process forked next shares it without copying it.
        gc.freeze()
        engine = self.engine
        if engine.renovation is not None:  # its worker forked first, before any thread starts
            engine.renovation.planner = Planner(engine.renovation)
        feed = TruckFeed(self.config.broker, self.config.client_id(), asyncio.get_running_loop(), engine.take)
        # Keepers and offices on MQTT channels are told through the same broker connection,
        # and renovation orders go to the trucks' terminals on it.
        self.sender.publish = feed.publish
        engine.dead_letter = feed.publish
        if engine.renovation is not None:
            engine.renovation.publish = feed.publish
        server = uvicorn.Server(
            uvicorn.Config(
                app(engine, self.token, self.tokens),
                host=self.config.api_host,
                port=self.config.api_port,
                log_level="warning",
                lifespan="off",
            )
        )
        api = asyncio.create_task(server.serve())
        feed.start()
        try:
            while not (server.started and feed.subscribed.is_set()):
                if api.done():
                    return 1
                await asyncio.sleep(0.05)
            log.info(
                "waste: API on %s:%d; %d trips in the timetable",
                self.config.api_host,
                self.config.api_port,
                len(engine.feed.trips),
            )
            self.started.set()
            orphans = asyncio.create_task(self._send_orphans_until(stop))
            await self._flush_until(stop)
            await orphans
        finally:
            feed.stop()
            server.should_exit = True
            await api
            if engine.renovation is not None and engine.renovation.planner is not None:
                await engine.renovation.planner.close()  # before the deliveries are drained
            await engine.deliveries.drain()
            await self.sender.close()
            # What an operator pressing Ctrl-C wants to know: what it did, and what is left.
            log.info(
                "waste: stopped; %d truck messages taken, %d notices claimed, %d waiting for the "
                "state, %d deliveries recorded as failed, %d store lines kept for the next start",
                engine.received,
                sum(engine.claimed.values()),
                engine.waiting,
                sum(engine.deliveries.gave_up.values()),
                engine.outbox.pending(),
            )
            engine.leadership.close()
            self.state.close()
        return 0

    async def _send_orphans_until(self, stop: asyncio.Event) -> None:
        """Every `ORPHANS_EVERY_S`: what waited for the state, then what a dead service held.
        A step that fails is counted and logged (`StateFaults`) and tried at the next round:
        the loop must outlive any of them, or orphans would wait for a restart."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ORPHANS_EVERY_S)
            for step, what in (
                (self.engine.send_waiting, "telling what waited for the state"),
                (self.engine.send_orphans, "sending orphaned deliveries"),
            ):
                try:
                    step()
                except Exception as exc:  # counted and logged, tried at the next round
                    self.engine.faults(exc, what)

    async def _flush_until(self, stop: asyncio.Event) -> None:
        """Write the outbox to the store every `flush_s`, and once more at the stop."""
        store = self.config.store
        if store is None:
            await stop.wait()
            return
        token = os.environ.get(store.token_env) or None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), store.flush_s)
            await asyncio.to_thread(self.engine.outbox.flush, store, token)
