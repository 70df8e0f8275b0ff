"""A full disk under the durable buffer, for real: a tmpfs of its own, filled to the last page.

The MQTT connector acknowledges a QoS 1 message only once its line is committed. While the
disk refuses commits nothing is acknowledged, so the broker keeps every message for the
agent's persistent session; once the disk has room, each is stored exactly once.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from linli.demo.servers import LocalServer
from linli.edge.agent import Agent
from linli.edge.buffer import DurableBuffer
from linli.edge.config import EdgeConfig, WriterConfig, WriterKind
from linli.edge.sinks import InfluxV1Sink
from linli.edge.writer import BatchWriter
from support import influx1_create_db, influx1_query, running, unique, wait_until
from test_mqtt_rejects import camera_config
from test_mqtt_sites import publish_all, publisher

MESSAGES = 20


def owner() -> str:
    """A test disk's name (its mount's source): the test session's pid and start time. A session
    killed on its time limit (a mutant, under scripts/mutation) never runs its fixture's unmount;
    scripts/mutation_leftovers.py unmounts each test disk whose session is gone, told so by this."""
    start = Path("/proc/self/stat").read_text().rsplit(") ", 1)[1].split()[19]
    return f"linli-test-{os.getpid()}-{start}"


class SmallDisk:
    """A 1 MB tmpfs mounted for one test: `fill` makes every new write on it fail with ENOSPC."""

    def __init__(self, folder: Path) -> None:
        if os.geteuid() != 0:
            # Never skip: without a full disk the branch under test does not run.
            pytest.fail("a full disk needs a tmpfs mount, which needs root (CI runs the tests as root)")
        folder.mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", "size=1m", owner(), str(folder)]
        done = subprocess.run(mount, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs for the full-disk test: {done.stderr.strip()}")
        self.folder = folder
        self._filler = folder / "filler"

    def fill(self) -> None:
        """Take every free page, so that the buffer's next commit is refused."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, bytes(4096))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)

    def free(self) -> None:
        """The disk has room again."""
        self._filler.unlink()

    def unmount(self) -> None:
        # Lazy: a test that failed with the buffer still open (a mutant, under scripts/mutation)
        # must not leave the mount behind; it goes once the last file on it is closed.
        subprocess.run(["umount", "--lazy", str(self.folder)], check=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "disk")
    yield disk
    disk.unmount()


def camera_agent(disk: SmallDisk, influx: LocalServer, mqtt_port: int) -> tuple[EdgeConfig, str, str]:
    """The camera agent of test_mqtt_rejects with its buffer on `disk`, its database and topic."""
    db, site = unique("fulldisk"), unique("site")
    influx1_create_db(influx.url, db)
    config = camera_config(influx, db, mqtt_port, site)
    buffer = config.buffer.model_copy(update={"path": disk.folder / "buffer.sqlite"})
    return config.model_copy(update={"buffer": buffer}), db, f"elevators/{site}/cam-1/detection"


async def publish(port: int, topic: str, count: int, start_ms: int) -> None:
    """`count` camera detections at QoS 1, each confirmed by the broker."""
    pub = publisher(port)
    try:
        await asyncio.to_thread(publish_all, pub, topic, count, start_ms)
    finally:
        pub.loop_stop()
        pub.disconnect()


async def refused_while_full(agent: Agent, disk: SmallDisk, port: int, topic: str, start_ms: int) -> None:
    """Fill the disk, publish MESSAGES QoS 1 messages, return once a commit of all of them failed."""
    mqtt = agent.mqtt
    assert mqtt is not None
    # What was committed before is written first, so that the full disk meets only the commit.
    await wait_until(lambda: agent.buffer.stats.lines == 0, 10, "the buffer written out")
    disk.fill()
    await publish(port, topic, MESSAGES, start_ms)
    await wait_until(lambda: mqtt.stored == MESSAGES, 10, "the messages handled")
    # The commit under way may have started before the last line was staged; the next one
    # holds them all.
    failures = agent.spool.failures
    await wait_until(lambda: agent.spool.failures >= failures + 2, 20, "two more refused commits")


def stored(influx: LocalServer, db: str) -> int:
    rows = influx1_query(influx.url, db, 'SELECT count("confidence") FROM camera')
    return int(rows[0]["count"]) if rows else 0


def test_a_full_disk_acknowledges_nothing_and_the_broker_keeps_every_message(
    mosquitto: LocalServer, influx1: LocalServer, small_disk: SmallDisk
) -> None:
    config, db, topic = camera_agent(small_disk, influx1, mosquitto.port)
    out: dict[str, int] = {}

    async def scenario() -> None:
        # The agent stops while the disk is still full: its lines were never committed, so
        # the broker must still hold every message for its session.
        async with running(config) as agent:
            await refused_while_full(agent, small_disk, mosquitto.port, topic, int(time.time() * 1000))
            out["failures"] = agent.spool.failures
        small_disk.free()
        async with running(config) as agent:
            mqtt = agent.mqtt
            assert mqtt is not None
            await wait_until(lambda: mqtt.stored >= MESSAGES, 20, "the broker's second delivery")
            await wait_until(lambda: stored(influx1, db) >= MESSAGES, 20, "the readings in the store")
            out["received again"] = mqtt.received

    asyncio.run(scenario())
    assert out["failures"] >= 2
    # Every message came again: none had been acknowledged before its commit.
    assert out["received again"] == MESSAGES
    assert stored(influx1, db) == MESSAGES


def test_the_disk_coming_back_commits_what_was_kept_and_acknowledges_it_once(
    mosquitto: LocalServer, influx1: LocalServer, small_disk: SmallDisk
) -> None:
    config, db, topic = camera_agent(small_disk, influx1, mosquitto.port)
    out: dict[str, int] = {}

    async def scenario() -> None:
        async with running(config) as agent:
            await refused_while_full(agent, small_disk, mosquitto.port, topic, int(time.time() * 1000))
            staged = agent.spool.staged
            commits = agent.spool.commits
            small_disk.free()
            # The lines kept in memory go to disk at the next retry, and then to the store.
            await wait_until(lambda: agent.spool.commits > commits, 20, "a commit once the disk has room")
            await wait_until(lambda: stored(influx1, db) >= MESSAGES, 20, "the readings in the store")
            out["staged while full"] = staged
        # Acknowledged once committed: the next start gets only a new message. The broker
        # sends what it holds unacknowledged first, so once the new one is in, nothing else came.
        async with running(config) as agent:
            mqtt = agent.mqtt
            assert mqtt is not None
            await publish(mosquitto.port, topic, 1, int(time.time() * 1000) + 60_000)
            await wait_until(lambda: mqtt.stored >= 1, 20, "the new message")
            out["received again"] = mqtt.received

    asyncio.run(scenario())
    assert out["staged while full"] >= MESSAGES
    assert out["received again"] == 1
    assert stored(influx1, db) == MESSAGES + 1


class FillsTheDiskAfterWriting:
    """The store takes the batch, then the disk under the buffer fills: the worst moment."""

    def __init__(self, sink: InfluxV1Sink, disk: SmallDisk) -> None:
        self.sink, self.disk, self.target = sink, disk, sink.target
        self.writes = 0

    def write(self, body: bytes) -> None:
        self.sink.write(body)
        self.writes += 1
        if self.writes == 1:
            self.disk.fill()

    def check(self) -> None:
        self.sink.check()

    def close(self) -> None:
        self.sink.close()


@pytest.mark.parametrize(
    ("batch_size", "writes"),
    [(5000, 3), (5, 6)],  # the chunk in one batch; larger than a batch, so written a part at a time
    ids=["whole", "part"],
)
def test_a_disk_that_fills_after_the_store_took_a_batch_keeps_the_writer_going(
    influx1: LocalServer, small_disk: SmallDisk, batch_size: int, writes: int
) -> None:
    db = unique("fulldisk")
    influx1_create_db(influx1.url, db)
    buffer = DurableBuffer(small_disk.folder / "buffer.sqlite", max_bytes=512_000)
    now_ms = int(time.time() * 1000)
    buffer.append([f"camera,site=s,device=cam-1 confidence={i}i {now_ms + i}" for i in range(MESSAGES)])
    sink = FillsTheDiskAfterWriting(
        InfluxV1Sink(WriterConfig(kind=WriterKind.INFLUXDB1, url=influx1.url, database=db)), small_disk
    )
    out: dict[str, object] = {}

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            writer = BatchWriter(sink, buffer, pool, batch_size=batch_size)
            # The store has the lines, the buffer cannot drop them: they stay, to be written again.
            out["first"] = await writer.write_batch()
            out["delay"] = writer._retry_delay  # backed off: not a busy loop of rewrites
            out["kept"] = buffer.stats.lines
            out["error"] = writer.stats.last_error
            out["second"] = await writer.write_batch()  # written again, refused again
            out["attempts"] = writer.stats.failed_attempts
            small_disk.free()
            out["again"] = await writer.write_batch()
            while await writer.write_batch():  # the parts left, if any
                pass
            out["left"] = buffer.stats.lines

    try:
        asyncio.run(scenario())
    finally:
        buffer.close()
    assert out["first"] is False
    assert 0.25 <= out["delay"] <= 0.5  # type: ignore[operator]
    assert (out["second"], out["attempts"]) == (False, 2)
    assert out["kept"] == MESSAGES
    assert "the buffer refused to drop written lines" in str(out["error"])
    assert out["again"] is True
    assert out["left"] == 0
    assert sink.writes == writes
    # Written twice, stored once: a point written again is the same point.
    assert stored(influx1, db) == MESSAGES
