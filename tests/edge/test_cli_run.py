"""`linli edge run` as operators run it: SIGTERM flushes everything read, exit code 0."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from linli.demo.chargers import write_config
from linli.demo.servers import LocalServer, free_port_range
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
    assert summary[0].endswith(", 0 lines kept in the buffer for the next start")
    health = vm_series_settled(victoria.url, "health_polls", "sigterm-test", 2)
    polls = {s["metric"]["device"]: max(s["values"]) for s in health}
    assert set(polls) == {"charger-01", "charger-02"}
    # Every poll's readings reached the store: a station's total power is stored at every poll
    # (it has no deadband), so one point per successful poll.
    power = vm_series_settled(victoria.url, "charger_total_power", "sigterm-test", 2)
    assert {s["metric"]["device"] for s in power} == set(polls)
    for series in power:
        assert len(series["timestamps"]) == polls[series["metric"]["device"]]


@pytest.mark.servers
def test_the_demo_survives_a_terminal_s_ctrl_c_and_says_where_its_data_is(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group: the demo's store must
    outlive the agent's last flush. The view never shows a station refused at the start."""
    datadir = tmp_path / "demo"
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "linli.cli.main",
            "demo",
            "--chargers-only",
            "--stations",
            "3",
            "--interval",
            "0.5",
            "--datadir",
            str(datadir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job has
    )
    assert demo.stdout is not None
    views: list[str] = []
    deadline = time.monotonic() + 60
    while not any("written 0 " not in v and "devices online 3/3" in v for v in views[1:]):
        ready, _, _ = select.select([demo.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no data flowing within 60 s: {views}"
        line = demo.stdout.readline()
        assert line, "the demo exited early"
        if line.startswith("linli edge"):
            views.append(line)
    os.killpg(demo.pid, signal.SIGINT)  # what the terminal does
    out, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, err
    assert "devices online 3/3" in views[-1]
    assert "refused" not in err  # no station was polled before it listened
    assert "failed, retrying" not in err
    assert "unreachable" not in err
    [stopped] = [line for line in out.splitlines() if line.startswith("demo stopped:")]
    written = int(stopped.split()[2].replace(",", ""))
    assert written > 0
    assert stopped.endswith(" 0 left in the buffer.")
    assert f"-storageDataPath {datadir.resolve() / 'victoria-metrics' / 'data'}" in out
    assert (datadir / "victoria-metrics" / "data").is_dir()
