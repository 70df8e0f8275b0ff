"""The technician's tools on site: `linli edge probe`, `scan` and `status`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linli.catalog.commands import print_json

# The parser is built for every `linli` command, `--help` included: the agent, its clients and
# pydantic are imported by the command that runs (see tests/cli/test_cli_startup.py).
if TYPE_CHECKING:
    from linli.catalog.profile import Profile
    from linli.edge.config import EdgeConfig
    from linli.edge.modbus import PollError

log = logging.getLogger(__name__)


def load(path: Path) -> EdgeConfig | None:
    """The config, checked here too for the files it names; None once the problems are printed."""
    from linli.catalog.errors import ConfigError
    from linli.edge.config import load_config, tls_file_problems

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"linli: config error in {exc}", file=sys.stderr)
        return None
    missing = tls_file_problems(config)
    if missing:
        print(f"linli: config error in {ConfigError(path, missing)}", file=sys.stderr)
        return None
    return config


def probe(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from linli.catalog.errors import validation_reason
    from linli.catalog.profile import get_profile
    from linli.edge.config import DeviceConfig
    from linli.edge.modbus import DevicePoller, Endpoint, PollError

    try:
        profile = get_profile(args.profile)
    except KeyError as exc:
        print(f"linli edge probe: {exc.args[0]}", file=sys.stderr)
        return 2
    if profile.modbus is None:
        print(
            f"linli edge probe: '{profile.kind}' is an MQTT device, not Modbus; watch its messages "
            f"with: mosquitto_sub -h BROKER -t '{_mqtt_root(profile)}' -v",
            file=sys.stderr,
        )
        return 2
    try:
        device = DeviceConfig(
            id="probe",
            profile=args.profile,
            host=args.host,
            port=args.port,
            unit=args.unit,
            count=args.count,
            timeout=args.timeout,
            interval=max(args.timeout, 1.0),
        )
    except ValidationError as exc:
        print(f"linli edge probe: {validation_reason(exc)}", file=sys.stderr)
        return 2
    endpoint = Endpoint(args.host, args.port, args.timeout)
    poller = DevicePoller(
        site="probe", device=device, profile=profile, endpoint=endpoint, emit=lambda _: None
    )

    device_facts = {
        "host": args.host, "port": args.port, "unit": poller.unit, "kind": profile.kind,
        "title": profile.title, "group": profile.group_tag,
    }  # fmt: skip

    async def once() -> int:
        started = time.perf_counter()
        try:
            blocks = await poller.poll()
        except PollError as exc:
            where = f"{args.host}:{args.port} unit {poller.unit}"
            print(f"{where}: NO ANSWER ({exc.reason}): {exc}{_hint(exc, profile)}", file=sys.stderr)
            if args.json:
                print_json({**device_facts, "answered": False, "reason": exc.reason, "detail": str(exc)})
            return 1
        finally:
            endpoint.close()
        elapsed = (time.perf_counter() - started) * 1000
        poller.decode(blocks, int(time.time() * 1000))
        units = {p.field: p.unit for _, p in profile.modbus_points(1)}
        enums = {p.field: p.enum for _, p in profile.modbus_points(1) if p.enum}
        if args.json:
            print_json({
                **device_facts, "answered": True, "reads": len(poller.reads), "elapsed_ms": round(elapsed, 1),
                "channels": [
                    {"channel": channel, "values": {
                        name: {"value": value, "unit": units.get(name, ""),
                               "meaning": (enums.get(name) or {}).get(str(value))}
                        for name, value in fields.items()
                    }}
                    for channel, fields in poller.last.items()
                ],
                "dropped": dict(poller.health.errors),
            })  # fmt: skip
            return 0
        print(
            f"{args.host}:{args.port} unit {poller.unit}: {profile.title}, "
            f"{len(poller.reads)} reads in {elapsed:.1f} ms"
        )
        for channel, fields in poller.last.items():
            label = "device" if channel is None else f"{profile.group_tag} {channel}"
            shown = []
            for name, value in fields.items():
                text = f"{value:g}" if isinstance(value, float) else str(value)
                meaning = (enums.get(name) or {}).get(str(value))
                shown.append(f"{name}={text}{units.get(name, '')}" + (f"({meaning})" if meaning else ""))
            print(f"  {label:<10} " + "  ".join(shown))
        for reason, n in poller.health.errors.items():
            print(f"  dropped values: {reason} x{n}", file=sys.stderr)
        return 0

    return asyncio.run(once())


def _mqtt_root(profile: Profile) -> str:
    assert profile.mqtt is not None
    return profile.mqtt.messages[0].topic.split("/", 1)[0] + "/#"


def _hint(exc: PollError, profile: Profile) -> str:
    """What a technician can try, for the answers that usually mean a wrong setting."""
    assert profile.modbus is not None
    group = profile.modbus.group
    if exc.reason == "exception_2" and group is not None:
        return (
            f". The device refused an address: does it have that many {profile.group_tag}s? "
            f"(--count, default {group.count})"
        )
    if exc.reason in ("exception_11", "timeout"):
        return ". Is the unit id right (--unit)? Is the device powered and wired to the gateway?"
    return ""


def scan(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from linli.catalog.profile import get_profile
    from linli.edge.scan import Answer, Found, config_snippet, parse_units, scan

    try:
        units = parse_units(args.units)
        profile = get_profile(args.profile) if args.profile else None
    except (ValueError, KeyError) as exc:
        print(f"linli edge scan: {exc.args[0]}", file=sys.stderr)
        return 2
    if profile is not None and profile.modbus is None:
        print(f"linli edge scan: '{profile.kind}' is an MQTT device, not Modbus", file=sys.stderr)
        return 2
    if not 0.05 <= args.timeout <= 10:
        print("linli edge scan: --timeout from 0.05 to 10 seconds", file=sys.stderr)
        return 2
    progress = Progress(
        TextColumn("scanning {task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[heard]} answered"), console=Console(stderr=True), transient=True,
    )  # fmt: skip
    heard = 0
    with progress:
        task = progress.add_task(f"{args.host}:{args.port}", total=len(units), heard=0)

        def tick(found: Found) -> None:
            nonlocal heard
            heard += found.someone
            progress.update(task, advance=1, heard=heard)

        found = asyncio.run(scan(args.host, args.port, units, profile, wait_s=args.timeout, progress=tick))
    failed = [f for f in found if f.answer is Answer.FAILED]
    silent = sum(f.answer is Answer.SILENT for f in found)
    snippet = config_snippet(found, profile, args.host, args.port)
    shown = [f for f in found if f.someone or f.answer is Answer.FAILED]
    if args.json:
        print_json({
            "host": args.host, "port": args.port, "profile": profile.kind if profile else None,
            "asked": len(found), "answered": heard, "silent": silent, "failed": len(failed),
            "units": [{"unit": f.unit, "answer": str(f.answer), "detail": f.detail} for f in shown],
            "config": snippet,
        })  # fmt: skip
        return 0 if heard else 1
    for f in shown:
        print(f"unit {f.unit:>3}: {f.answer:<11} {f.detail}")
    print(f"{heard} of {len(found)} units answered, {silent} silent, {len(failed)} failed")
    if snippet:
        print("\n# paste under the site's [[sites]] table:\n" + snippet, end="")
    return 0 if heard else 1


def status(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    url = args.url
    if url is None:
        config = load(args.config)
        if config is None:
            return 2
        if not config.agent.metrics:
            print(f'linli edge status: {args.config} has no [agent] metrics = "HOST:PORT"', file=sys.stderr)
            return 2
        url = f"http://{config.agent.metrics}"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=5) as resp:  # noqa: S310 (the technician's URL)
            health = json.load(resp)
    except (OSError, ValueError) as exc:
        print(f"linli edge status: {url}: no answer ({exc})", file=sys.stderr)
        return 1
    if args.json:
        print_json(health)
    else:
        print(_status_text(health), end="")
    return 0 if health["devices_online"] == health["devices"] else 1


def _status_text(h: dict[str, Any]) -> str:
    b, w = h["buffer"], h["writer"]
    lines = [
        f"agent {h['agent']}: {h['devices_online']} of {h['devices']} devices online",
        f"  buffer   {b['lines']} lines, {b['bytes']} bytes, oldest {b['oldest_pending_s']:g} s",
        f"  writes   {w['written']} written, {w['retried']} retried, {w['failed_writes']} failed, "
        f"{w['dropped']} dropped, {w['dead_lettered']} dead-lettered",
    ]
    if h["mqtt"]:
        m = h["mqtt"]
        rejected = sum(h["rejected"].values())
        lines.append(f"  mqtt     {m['received']} received, {m['stored']} stored, {rejected} rejected")
    for name in h["offline"]:
        lines.append(f"  offline  {name}")
    for alert in h["alerts"]:
        lines.append(f"  alert    {alert['rule']} {alert['state']} on {alert['series']}")
    for name, errors in h["errors"].items():
        lines.append(f"  errors   {name}: " + ", ".join(f"{r} x{n}" for r, n in errors.items()))
    return "\n".join(lines) + "\n"
