"""`linli edge run` as operators run it: SIGTERM flushes everything read, exit code 0."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from linli.demo import write_config
from linli.localservers import LocalServer, free_port_range
from support import start_sim, stop_process, vm_series_settled


def test_sigterm_flushes_pending_readings(victoria: LocalServer, tmp_path: Path) -> None:
    first = free_port_range(2)
    sim = start_sim("charger", "--port", str(first), "--stations", "2")
    config = tmp_path / "edge.toml"
    write_config(config, store_url=victoria.url, first_port=first, stations=2, interval=0.2)
    # A unique site keeps this test's series apart in the shared store.
    text = config.read_text(encoding="utf-8").replace('id = "hongqiao-demo"', 'id = "sigterm-test"')
    # A long flush interval: whatever was read must be written by the shutdown, not by a timer.
    text = text.replace("flush_interval = 1.0", "flush_interval = 60.0")
    config.write_text(text.replace('log_level = "warning"', 'log_level = "info"'), encoding="utf-8")
    agent = subprocess.Popen(
        [sys.executable, "-m", "linli.cli", "edge", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert agent.stderr is not None
    # Wait until both devices reported online, then stop the agent as systemd would.
    online, deadline = 0, time.monotonic() + 30
    while online < 2:
        ready, _, _ = select.select([agent.stderr], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, "the agent did not report both devices online within 30 s"
        line = agent.stderr.readline()
        assert line, "the agent exited early"
        online += ": online (" in line
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    assert stop_process(sim) == 0

    summary = [line for line in err.splitlines() if "agent stopped" in line]
    assert summary, err
    assert summary[0].endswith(", 0 kept in the buffer for the next start")
    health = vm_series_settled(victoria.url, "health_polls", "sigterm-test", 2)
    polls = {s["metric"]["device"]: max(s["values"]) for s in health}
    assert set(polls) == {"charger-01", "charger-02"}
    # Every poll's readings reached the store: one port-1 power point per successful poll.
    power = vm_series_settled(victoria.url, "charger_power", "sigterm-test", 1)
    for series in power:
        if series["metric"].get("port") == "1":
            assert len(series["timestamps"]) == polls[series["metric"]["device"]]
