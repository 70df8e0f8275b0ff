"""Benchmark: K simulated stations polled by the edge agent into VictoriaMetrics.

Runs the simulator, the agent and VictoriaMetrics as separate processes, samples the
agent's CPU time from /proc in fixed windows, and reads polls, poll latency and schedule lag
from the agent's /metrics (its histograms, at the start and end of the measured span). Then,
in the same run, `bare_modbus.py` polls the same registers on the same schedule and keeps
nothing: the ceiling the agent's CPU is compared with. Prints medians over the windows.

    .venv/bin/python benchmarks/charger_poll.py [--stations 100] [--duration 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from harness import cpu_seconds, cpu_split, start_charger_sim
from linli.demo.chargers import write_config
from linli.demo.servers import free_port, free_port_range, start_victoria_metrics


def export(url: str, match: str) -> list[dict[str, object]]:
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=30).read()  # noqa: S310
    q = urllib.parse.urlencode({"match[]": match})
    with urllib.request.urlopen(f"{url}/api/v1/export?{q}", timeout=120) as resp:  # noqa: S310
        return [json.loads(line) for line in resp.read().decode().splitlines() if line]


Histogram = list[tuple[float, float]]  # cumulative (upper bound, count), +Inf last


def histograms(url: str) -> dict[str, Histogram]:
    """The agent's histograms from its /metrics, by name."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:  # noqa: S310
        text = resp.read().decode()
    out: dict[str, Histogram] = {}
    for family in text_string_to_metric_families(text):
        if family.type == "histogram":
            out[family.name] = [
                (float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")
            ]
    return out


def wait_listening(url: str, agent: subprocess.Popen[bytes]) -> None:
    """Until the agent's /metrics answers: on a loaded machine its start-up alone can take
    longer than the settling time."""
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/metrics", timeout=10).close()  # noqa: S310
            return
        except OSError:
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    "benchmark: the agent's /metrics did not answer; see its log above"
                ) from None
            time.sleep(0.1)


def quantile(before: Histogram, after: Histogram, q: float) -> float:
    """The q-quantile (0..1) of what was observed between two scrapes, interpolated within its
    bucket as Prometheus's histogram_quantile does."""
    counts = [(le, b - a) for (le, b), (_, a) in zip(after, before, strict=True)]
    total = counts[-1][1]
    rank, lower, below = q * total, 0.0, 0.0
    for le, cumulative in counts:
        if cumulative >= rank:
            if le == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, cumulative
    return lower


def run(  # noqa: PLR0917 (the benchmark's knobs)
    stations: int, interval: float, duration: float, window: float, workdir: Path, every_poll: bool
) -> dict[str, float]:
    vm = start_victoria_metrics(workdir / "vm")
    first = free_port_range(stations)
    try:
        sim = start_charger_sim(first, stations, "--warmup", "10800")
    except SystemExit:
        vm.stop()
        raise
    config = workdir / f"edge-{interval}.toml"
    metrics = f"127.0.0.1:{free_port()}"
    write_config(
        config,
        store_url=vm.url,
        first_port=first,
        stations=stations,
        interval=interval,
        every_poll=every_poll,
        metrics=metrics,
    )
    agent = subprocess.Popen([sys.executable, "-m", "linli.cli", "edge", "run", "--config", str(config)])
    try:
        wait_listening(f"http://{metrics}", agent)
        time.sleep(5)  # connect and settle before measuring
        t0, before = time.time(), histograms(f"http://{metrics}")
        user0, system0 = cpu_split(agent.pid)
        windows = cpu_windows(agent.pid, duration, window)
        t1, after = time.time(), histograms(f"http://{metrics}")
        user1, system1 = cpu_split(agent.pid)
        agent.terminate()
        agent.wait(30)
        # The ceiling, in the same run: the same requests on the same schedule, nothing kept.
        bare_cpu, bare_polls = ceiling(config, duration, window)
    finally:
        if agent.poll() is None:
            agent.terminate()
            agent.wait(30)
        sim.terminate()
        sim.wait(30)
    start_ms, end_ms = int(t0 * 1000), int(t1 * 1000)

    def in_window(series: list[dict[str, object]]) -> list[float]:
        out: list[float] = []
        for s in series:
            stamps, values = s["timestamps"], s["values"]
            assert isinstance(stamps, list)
            assert isinstance(values, list)
            out += [float(v) for t, v in zip(stamps, values, strict=True) if start_ms <= t < end_ms]
        return out

    values = in_window(export(vm.url, '{__name__=~"charger_.*"}'))  # every stored field value
    vm.stop()
    seconds = (end_ms - start_ms) / 1000
    latency = (before["linli_poll_latency_seconds"], after["linli_poll_latency_seconds"])
    lag = (before["linli_poll_lag_seconds"], after["linli_poll_lag_seconds"])
    polls_per_s = (latency[1][-1][1] - latency[0][-1][1]) / seconds  # answered polls
    cpu = statistics.median(windows)
    used = (user1 - user0) + (system1 - system0)
    return {
        "polls_per_s": polls_per_s,
        "values_per_s": len(values) / seconds,
        "cpu_percent": cpu,
        "cpu_percent_min": min(windows),
        "cpu_percent_max": max(windows),
        "system_share": (system1 - system0) / used if used else 0.0,
        "latency_p50_ms": quantile(*latency, 0.5) * 1000,
        "latency_p99_ms": quantile(*latency, 0.99) * 1000,
        "lag_p50_ms": quantile(*lag, 0.5) * 1000,
        "lag_p99_ms": quantile(*lag, 0.99) * 1000,
        "ceiling_polls_per_s": polls_per_s / (cpu / 100) if cpu else 0.0,
        "bare_cpu_percent": bare_cpu,
        "bare_polls_per_s": bare_polls,
    }


def cpu_windows(pid: int, duration: float, window: float) -> list[float]:
    """The process's CPU, % of a core, in each `window` seconds of `duration`."""
    windows = []
    for _ in range(int(duration // window)):
        c0, w0 = cpu_seconds(pid), time.monotonic()
        time.sleep(window)
        windows.append((cpu_seconds(pid) - c0) / (time.monotonic() - w0) * 100)
    return windows


def ceiling(config: Path, duration: float, window: float) -> tuple[float, float]:
    """(median CPU % of a core, polls/s answered) of `bare_modbus.py` on the agent's config."""
    bare = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("bare_modbus.py")), "--config", str(config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(5)  # connect and settle, as the agent did
        cpu = statistics.median(cpu_windows(bare.pid, duration, window))
    finally:
        bare.terminate()
        out, _ = bare.communicate(timeout=30)
    if bare.returncode != 0:
        raise SystemExit(f"benchmark: bare_modbus.py failed ({bare.returncode}): {out}")
    # "bare_modbus: 100.0 polls/s answered, ..." (over its whole life, settling included)
    return cpu, float(out.split()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=100)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--window", type=float, default=10.0, help="CPU sampling window")
    parser.add_argument(
        "--every-poll", action="store_true", help="store every point at every poll (no report by exception)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="linli-bench-") as tmp:
        r = run(args.stations, args.interval, args.duration, args.window, Path(tmp), args.every_poll)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {machine}")
    stored = "every poll" if args.every_poll else "by exception"
    print(f"load: {args.stations} stations x 10 ports every {args.interval:g}s, {args.duration:g}s measured")
    print(f"device polls/s             {r['polls_per_s']:10.1f}")
    print(f"reading values written/s   {r['values_per_s']:10.0f}  (stored {stored}; health not counted)")
    spread = f"{r['cpu_percent_min']:.1f}..{r['cpu_percent_max']:.1f}"
    print(f"agent CPU % of one core    {r['cpu_percent']:10.1f}  (median of windows; {spread})")
    print(f"  of it in the kernel        {r['system_share'] * 100:8.0f} %  (system time, whole span)")
    print(f"poll latency p50 / p99 ms  {r['latency_p50_ms']:10.2f} / {r['latency_p99_ms']:.2f}")
    print(f"schedule lag p50 / p99 ms  {r['lag_p50_ms']:10.2f} / {r['lag_p99_ms']:.2f}  (poll-cycle jitter)")
    print(f"ceiling polls/s at 100 %   {r['ceiling_polls_per_s']:10.0f}  (polls/s over CPU fraction)")
    bare = f"{r['bare_cpu_percent']:10.1f}  ({r['bare_polls_per_s']:.1f} polls/s answered)"
    print(f"bare pymodbus CPU %        {bare}")
    ratio = r["cpu_percent"] / r["bare_cpu_percent"] if r["bare_cpu_percent"] else float("inf")
    print(f"agent / bare pymodbus      {ratio:10.2f}  (goal <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
