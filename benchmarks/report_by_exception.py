"""Points stored per device per hour, every poll against report by exception, for a simulated day.

Every Modbus device of the district scenario (the charging stations, the fire sensors behind
their gateways) runs as the simulator runs it, from local midnight for --hours, after a
warm-up of three simulated hours. At each of its polls (at its group's interval) its register
image is decoded by two of the agent's pollers: one storing every poll, one storing by
exception with the profiles' deadbands. The figures are the values (one per field per stored
line, as the stores count samples) and the lines each writes, per device per hour, by kind.
No TCP here: what goes over the wire is the same either way; what is stored is not.

    .venv/bin/python benchmarks/report_by_exception.py [--hours 24] [--sample 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from linli.catalog.profile import get_profile
from linli.catalog.scenario import PlacedDevice, builtin_scenario_path, expand, load_scenario
from linli.edge.config import DeviceConfig
from linli.edge.modbus import DevicePoller, Endpoint
from linli.sim.context import kind_module
from linli.sim.district import context
from linli.sim.image import build_image

DAY = "2026-11-02T00:00+08:00"  # a Monday
WARMUP_S = 3 * 3600


@dataclass
class Tally:
    devices: int = 0
    polls: int = 0
    values: int = 0
    lines: int = 0
    values_rbe: int = 0
    lines_rbe: int = 0


def count(lines: list[str]) -> tuple[int, int]:
    """(lines, values) in a batch of line protocol (no commas in this district's strings)."""
    return len(lines), sum(line.split(" ")[1].count(",") + 1 for line in lines)


def run(hours: float, sample: int) -> dict[str, Tally]:
    scenario = load_scenario(builtin_scenario_path())
    start = datetime.fromisoformat(DAY).timestamp()
    placed = [d for d in expand(scenario) if d.port is not None]
    if sample:
        by_kind: dict[str, list[PlacedDevice]] = defaultdict(list)
        for d in placed:
            by_kind[d.kind].append(d)
        placed = [d for group in by_kind.values() for d in group[:sample]]
    tallies: dict[str, Tally] = defaultdict(Tally)
    end = start + hours * 3600
    began = time.monotonic()
    for n, device in enumerate(placed, 1):
        profile = get_profile(device.kind)
        model = kind_module(device.kind).make(context(scenario, device, start - WARMUP_S, frozenset()))
        model.advance_to(start)
        config = DeviceConfig(id=device.device, profile=device.kind, tags=device.group.tags)
        pollers = [
            DevicePoller(
                site=device.site,
                device=config.model_copy(update={"report_by_exception": by_exception}),
                profile=profile,
                endpoint=Endpoint("127.0.0.1", 1, 1.0),  # never connected: the image is decoded directly
                emit=lambda _lines: None,
            )
            for by_exception in (False, True)
        ]
        interval = device.group.interval or 1.0
        tally = tallies[device.kind]
        tally.devices += 1
        t = start
        while t < end:
            model.advance_to(t)
            image = build_image(profile, model.values(), model.count)
            time_ms = int(t * 1000)
            for poller, by_exception in zip(pollers, (False, True), strict=True):
                # The poller's own schedule of settings reads, on the simulated clock.
                reads = poller.reads_due(t)
                poller.took(reads, t)
                blocks = [image[r.table][r.address : r.address + r.count] for r in reads]
                lines, values = count(poller.decode(blocks, time_ms))
                if by_exception:
                    tally.lines_rbe += lines
                    tally.values_rbe += values
                else:
                    tally.lines += lines
                    tally.values += values
            tally.polls += 1
            t += interval
        elapsed = time.monotonic() - began
        print(f"  {n}/{len(placed)} devices, {elapsed:.0f} s", file=sys.stderr, end="\r", flush=True)
    print(file=sys.stderr)
    return tallies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--hours", type=float, default=24.0, help="simulated hours from midnight (default 24)"
    )
    parser.add_argument(
        "--sample", type=int, default=0, help="at most this many devices of each kind (0: all)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON line instead of the table")
    args = parser.parse_args()
    if args.hours <= 0 or args.hours > 24 * 7:
        parser.error("--hours must be more than 0 and at most 168")
    tallies = run(args.hours, args.sample)
    h = args.hours
    rows = []
    for kind, t in sorted(tallies.items()):
        per = t.devices * h
        rows.append(
            {
                "kind": kind,
                "devices": t.devices,
                "polls_per_device_hour": round(t.polls / per, 1),
                "values_per_device_hour": round(t.values / per),
                "values_per_device_hour_by_exception": round(t.values_rbe / per),
                "lines_per_device_hour": round(t.lines / per),
                "lines_per_device_hour_by_exception": round(t.lines_rbe / per),
                "values_ratio": round(t.values / max(1, t.values_rbe), 1),
            }
        )
    all_values = sum(t.values for t in tallies.values())
    all_rbe = sum(t.values_rbe for t in tallies.values())
    summary = {
        "hours": h,
        "devices": sum(t.devices for t in tallies.values()),
        "values_per_s": round(all_values / (h * 3600), 1),
        "values_per_s_by_exception": round(all_rbe / (h * 3600), 1),
        "values_ratio": round(all_values / max(1, all_rbe), 1),
        "kinds": rows,
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{summary['devices']} Modbus devices, {h:g} simulated hours from {DAY}")
    print(
        f"{'kind':15} {'devices':>7} {'polls/h':>8} {'values/h':>9} {'by exc.':>8} {'ratio':>6} "
        f"{'lines/h':>8} {'by exc.':>8}"
    )
    for r in rows:
        print(
            f"{r['kind']:15} {r['devices']:>7} {r['polls_per_device_hour']:>8} "
            f"{r['values_per_device_hour']:>9} {r['values_per_device_hour_by_exception']:>8} "
            f"{r['values_ratio']:>6} {r['lines_per_device_hour']:>8} "
            f"{r['lines_per_device_hour_by_exception']:>8}"
        )
    print(
        f"district: {summary['values_per_s']} values/s every poll, {summary['values_per_s_by_exception']} "
        f"by exception ({summary['values_ratio']}x fewer)"
    )


if __name__ == "__main__":
    main()
