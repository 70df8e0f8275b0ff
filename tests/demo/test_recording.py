"""The dashboards' recording (`linli.demo.recording`) ends once its agent has written
everything it recorded, however slow the store (issue 30: a screen without the recording's
last moments, an alert's "resolved" or a site's latest values, failed a loaded run)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from linli.dashboards.influxv1 import run as query
from linli.demo.recording import (
    FAULTS,
    _faulted_devices,
    _until_recorded,
    stop_district,
    stop_writing,
    write_all,
)
from linli.demo.servers import free_port, start_influxdb1
from linli.edge.agent import Agent
from linli.edge.config import EdgeConfig
from support import influx1_create_db, wait_until

# Longer than the agent's own drain at a stop (10 s): a write that stalls this long fails.
STALL_S = 11.0


@pytest.mark.servers
@pytest.mark.slow
def test_the_recording_ends_once_its_agent_wrote_everything_to_a_store_that_stalls(tmp_path: Path) -> None:
    """The store stops answering (SIGSTOP) as the recording ends, past the agent's drain of
    10 s: two writes time out after the stop. The recording waits, and once the store answers
    again every line is in it. (Before, the agent gave up after 10 s and left its last lines in
    its buffer, and the recording went on without them.)"""
    influx = start_influxdb1(tmp_path / "influx")
    try:
        influx1_create_db(influx.url, "recording")
        config = EdgeConfig.model_validate(
            {
                "agent": {"name": "recording-edge"},
                "writer": {
                    "kind": "influxdb1",
                    "url": influx.url,
                    "database": "recording",
                    "flush_interval": 0.2,
                    "timeout": STALL_S,
                },
                "buffer": {"path": str(tmp_path / "edge.buffer.sqlite")},
                # A charger nobody answers for: its health point says so.
                "sites": [
                    {"id": "slow-store", "devices": [{"id": "c1", "profile": "charger", "port": free_port()}]}
                ],
            }
        )
        agent = Agent(config)

        async def go() -> int:
            stop = asyncio.Event()
            task = write_all(agent, stop)
            await wait_until(lambda: agent.writer.stats.written > 0, 60, "a first line written")
            influx.proc.send_signal(signal.SIGSTOP)
            failed = agent.writer.stats.failed_attempts
            stopping = asyncio.create_task(stop_writing(stop, task, influx.url))
            try:
                await wait_until(
                    lambda: task.done() or agent.writer.stats.failed_attempts >= failed + 2,
                    4 * STALL_S + 30,
                    "two writes failed after the stop",
                )
            finally:
                influx.proc.send_signal(signal.SIGCONT)
            return await stopping  # raises if the agent left lines in its buffer

        end_ms = asyncio.run(go())
        assert agent.writer.pending == 0
        # The agent's last health point, made as it stopped, is in the store.
        [last] = query(
            influx.url,
            "recording",
            'SELECT last("buffer_lines") FROM "health" WHERE "device" = \'recording-edge\'',
        )
        assert int(str(last.values[0][0])) >= end_ms, (last.values, end_ms)
    finally:
        influx.proc.send_signal(signal.SIGCONT)
        influx.stop()


# Ignores SIGTERM and exits once its stdin is closed: a simulator slow to stop.
SLOW_TO_STOP = (
    "import signal, sys\n"
    "signal.signal(signal.SIGTERM, lambda *_: None)\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.mark.servers
def test_the_recording_waits_for_a_simulator_slow_to_stop_while_its_agent_runs_on() -> None:
    """Between the two halves the recording waits for the first simulator to exit (the second
    listens on its ports). The wait runs beside the agent and the waste service: here the
    simulator exits only once the event loop has run on, which it does only if the wait leaves
    it free. (Before, `sim.wait(10)` held the loop and gave up after 10 s: under stress-ng the
    simulator took longer, and the whole recording failed.)"""
    sim = subprocess.Popen(
        [sys.executable, "-c", SLOW_TO_STOP], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert sim.stdin is not None
    assert sim.stdout is not None
    try:
        assert sim.stdout.readline().strip() == "ready"

        async def go() -> None:
            stopping = asyncio.create_task(stop_district(sim))
            for _ in range(10):  # the loop runs on while the simulator is stopping
                await asyncio.sleep(0)
            assert sim.stdin is not None
            sim.stdin.close()  # now it exits
            await asyncio.wait_for(stopping, 60)

        asyncio.run(go())
        assert sim.returncode == 0  # it exited by itself, after SIGTERM, not killed
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()


class Edge:
    """The agent as the recording reads it: one station, no MQTT, no alert; counts its looks."""

    def __init__(self) -> None:
        self.station = SimpleNamespace(
            name="hongxu-1/station-1", health=SimpleNamespace(online=True, last_seen_ms=0)
        )
        self.alerting = SimpleNamespace(events=[])
        self.mqtt = None
        self.looks = 0

    @property
    def pollers(self) -> list[SimpleNamespace]:
        self.looks += 1
        return [self.station]


def test_the_second_half_runs_on_until_every_faulted_device_was_read_since_it_began() -> None:
    """Past its stretch, with a trip over and every station online, the second half still waits
    for a faulted station that a starved simulator has not yet answered since the half began.
    (Before, it ended: under four CPU hogs the screen had no smoke alarm and the annotation's
    query returned nothing.)"""
    agent = Edge()
    waste = SimpleNamespace(engine=SimpleNamespace(finished=True))
    faults = (
        "hongxu-1/station-1:smoke",
        "hongxu-tower:leak",
        "fleet/truck-dry-north:blocked",
        "gubei-1/station-2:silent",  # answers nothing: not waited for
        "zunyi-1/station-1:smoke",  # dark since the half began: not waited for
    )
    began_ms = 1_800_000_000_000
    agent.station.health.last_seen_ms = began_ms - 1  # answered before, by the first half

    async def go() -> None:
        recorded = asyncio.create_task(
            _until_recorded(agent, waste, faults, time.monotonic(), began_ms)  # type: ignore[arg-type]
        )
        await wait_until(lambda: agent.looks >= 2 or recorded.done(), 30, "the recording looking twice")
        assert not recorded.done()  # not read since: it waits
        agent.station.health.last_seen_ms = began_ms + 1000
        await asyncio.wait_for(recorded, 30)

    asyncio.run(go())
    assert _faulted_devices(FAULTS) == {
        "hongxu-1/station-1",
        "gubei-1/station-1",
        "changhong-1/station-1",
        "ronghua-tower/sprinkler-1",
        "changhong-tower-2/pump-1",
        "changhong-tower-1/smoke-2",
        "ronghua-tower/door-1",
        "yili-1/rescue-1",
    }
