"""What the benchmarks share: a process's CPU time, the charger simulator, the broker's limits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_charger_sim(first_port: int, stations: int, *extra: str) -> subprocess.Popen[str]:
    """`linli sim charger` serving `stations` from `first_port` on, once every station listens."""
    argv = ["sim", "charger", "--port", str(first_port), "--stations", str(stations), *extra]
    sim = subprocess.Popen(
        [sys.executable, "-m", "linli.cli", *argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sim.stdout is not None
    if "linli sim" not in sim.stdout.readline():  # it says so once every station listens
        sim.wait()
        raise SystemExit("benchmark: the simulator did not start; see its error above")
    return sim
