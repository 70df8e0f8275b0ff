"""The agent's /metrics and /health, and `linli edge status`, against its own stored health points.

Two charger stations answer and one device does not; once the store's health points say so,
a scrape must say the same, parsed with prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from linli.demo.servers import LocalServer, free_port, free_port_range
from linli.edge.agent import Agent
from linli.edge.config import EdgeConfig
from support import (
    http_get,
    influx1_create_db,
    influx1_query,
    linli,
    start_sim,
    stop_process,
    unique,
    wait_until,
)


def test_metrics_health_and_status_say_what_the_stored_health_points_say(
    influx1: LocalServer, tmp_path: Path
) -> None:
    db, site = unique("metrics"), unique("site")
    influx1_create_db(influx1.url, db)
    first, port = free_port_range(2), free_port()
    sim = start_sim("charger", "--port", str(first), "--stations", "2")
    timing = {"interval": 0.5, "timeout": 0.3, "health_every": 0.5}  # a health point each poll
    config = EdgeConfig.model_validate(
        {
            "agent": {"name": unique("agent"), "metrics": f"127.0.0.1:{port}"},
            "writer": {"kind": "influxdb1", "url": influx1.url, "database": db, "flush_interval": 0.2},
            "buffer": {"path": str(tmp_path / "buffer.sqlite")},
            "sites": [{"id": site, "devices": [
                {"id": "station-1", "profile": "charger", "port": first, **timing},
                {"id": "station-2", "profile": "charger", "port": first + 1, **timing},
                {"id": "gone", "profile": "charger", "port": free_port(), **timing},
            ]}],
        }
    )  # fmt: skip

    def stored() -> dict[str, dict[str, float]]:
        rows = influx1_query(
            influx1.url, db, "SELECT last(online) AS online, last(polls) AS polls, "
            f"last(unchanged) AS unchanged FROM health "
            f"WHERE site = '{site}' GROUP BY device"
        )  # fmt: skip
        return {r["device"]: r for r in rows}

    async def scenario() -> tuple[dict[str, dict[str, float]], str, str, str, str]:
        agent = Agent(config)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            want = {"station-1": 1, "station-2": 1, "gone": 0}

            def settled() -> bool:
                rows = stored()
                # and a poll after the first, which holds unchanged values back
                return {d: r["online"] for d, r in rows.items()} == want and rows["station-1"][
                    "unchanged"
                ] > 0

            await wait_until(settled, 20, "the stored health")
            points = stored()
            base = f"http://127.0.0.1:{port}"
            text = (await asyncio.to_thread(http_get, f"{base}/metrics")).decode()
            health = (await asyncio.to_thread(http_get, f"{base}/health")).decode()
            status = await asyncio.to_thread(linli, "edge", "status", "--url", base)
            assert status.returncode == 1  # a device is offline
            as_json = await asyncio.to_thread(linli, "edge", "status", "--url", base, "--json")
            assert as_json.returncode == 1  # the same exit code for scripts
        finally:
            stop.set()
            assert await task
            stop_process(sim)
        return points, text, health, status.stdout, as_json.stdout

    points, text, health, status, status_json = asyncio.run(scenario())
    families = {f.name: f for f in text_string_to_metric_families(text)}
    online = {s.labels["device"]: s.value for s in families["linli_device_online"].samples}
    assert online == {d: float(p["online"]) for d, p in points.items()}
    polls = {
        s.labels["device"]: s.value
        for s in families["linli_device_polls"].samples
        if s.name.endswith("_total")
    }
    assert all(polls[d] >= p["polls"] for d, p in points.items())  # counters only grow
    # Every answered poll's latency is in the histogram, taken in the same snapshot as the counters
    # (`polls` counts attempts; the gone station's all failed).
    answered = polls["station-1"] + polls["station-2"]
    latency_samples = families["linli_poll_latency_seconds"].samples
    latency = {s.name: s.value for s in latency_samples if "le" not in s.labels}
    assert latency["linli_poll_latency_seconds_count"] == answered
    # How long they took is a figure of the machine (benchmarks/charger_poll.py reports it).
    assert latency["linli_poll_latency_seconds_sum"] > 0
    buckets = [s.value for s in latency_samples if "le" in s.labels]
    assert buckets == sorted(buckets)  # cumulative
    assert buckets[-1] == answered  # +Inf last
    lag = {s.name: s.value for s in families["linli_poll_lag_seconds"].samples if "le" not in s.labels}
    assert lag["linli_poll_lag_seconds_count"] >= sum(polls.values())  # every tick, answered or not
    unchanged = {
        s.labels["device"]: s.value
        for s in families["linli_device_unchanged_values"].samples
        if s.name.endswith("_total")
    }
    # Report by exception held values back (the settings, the alarm bits) and said so in both.
    assert all(unchanged[d] >= p["unchanged"] for d, p in points.items())
    assert points["station-1"]["unchanged"] > 0
    errors = {
        (s.labels["device"], s.labels["reason"]): s.value
        for s in families["linli_device_errors"].samples
        if s.name.endswith("_total")
    }
    assert errors[("gone", "refused")] > 0
    assert not any(device.startswith("station") for device, _ in errors)
    assert families["linli_devices"].samples[0].value == 3
    assert families["linli_devices_online"].samples[0].value == 2
    assert families["linli_written_lines"].samples[0].value > 0
    assert "linli_buffer_oldest_pending_seconds" in families
    assert families["process_resident_memory_bytes"].samples[0].value > 10_000_000
    h = json.loads(health)
    assert (h["devices"], h["devices_online"], h["offline"]) == (3, 2, [f"{site}/gone"])
    assert "2 of 3 devices online" in status
    assert f"offline  {site}/gone" in status
    # --json is the agent's /health as it is, the facts the text shows.
    j = json.loads(status_json)
    assert j.keys() == h.keys()
    assert (j["agent"], j["devices"], j["devices_online"], j["offline"]) == (h["agent"], 3, 2, h["offline"])
    assert f"agent {j['agent']}: 2 of 3 devices online" in status
