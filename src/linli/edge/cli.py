"""`linli edge ...`: run the agent, check a config, probe a device on site."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linli.catalog.commands import print_json, run_until_signal, setup_logging

# The parser is built for every `linli` command, `--help` included: the agent, its clients and
# pydantic are imported by the command that runs (see tests/cli/test_cli_startup.py).
if TYPE_CHECKING:
    from linli.catalog.profile import Profile
    from linli.edge.agent import Agent
    from linli.edge.config import EdgeConfig
    from linli.edge.modbus import DevicePoller, PollError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `linli edge` and its commands."""
    edge = subparsers.add_parser("edge", help="the edge agent and the technician's tools")
    cmds = edge.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = cmds.add_parser("run", help="poll devices and write readings until stopped")
    run.add_argument("--config", type=Path, required=True, help="the agent's TOML config")
    run.add_argument("--view", action="store_true", help="show the live view on stdout")
    run.set_defaults(func=_run)

    check = cmds.add_parser(
        "check",
        help="validate a config and show the read plan",
        description=(
            "Validate a config and print what the agent would do: each device's reads, the MQTT "
            "subscriptions, the alert rules and interlocks. With --contact, also ask the store "
            "whether it takes writes (database or bucket, credentials) and the broker whether it "
            "takes the agent's connection. Exit 0 if all is well, 1 if a server refused or is "
            "unreachable, 2 if the config is invalid."
        ),
    )
    check.add_argument("--config", type=Path, required=True, help="the agent's TOML config")
    check.add_argument(
        "--contact", action="store_true", help="also contact the store and the broker (nothing is written)"
    )
    check.set_defaults(func=_check)

    probe = cmds.add_parser(
        "probe",
        help="read a Modbus device once and print its decoded values",
        description=(
            "Read one Modbus device once, as the agent would, and print every value with its unit. "
            "Exit 0 if it answered, 1 if not (with the reason), 2 for bad usage."
        ),
    )
    probe.add_argument("--profile", required=True, help="device kind with a Modbus map, e.g. charger")
    probe.add_argument("--host", required=True, help="the device's or gateway's address")
    probe.add_argument("--port", type=int, default=502, help="Modbus TCP port (default 502)")
    probe.add_argument("--unit", type=int, default=None, help="unit id (default: the profile's)")
    probe.add_argument("--count", type=int, default=None, help="channels, e.g. ports on a charger")
    probe.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for an answer (default 1)")
    _json_option(probe)
    probe.set_defaults(func=_probe)

    _add_site_tools(cmds)
    _add_service_tools(cmds)


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout, for scripts (same exit codes)"
    )


def _add_site_tools(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """What a technician uses on site: scan a gateway, watch devices, write a first config."""
    scan = cmds.add_parser(
        "scan",
        help="find which unit ids answer on a Modbus gateway",
        description=(
            "Ask each unit id in turn, one request at a time with a short timeout, nothing written. "
            "With --profile each unit is read as that kind of device and its answer checked against "
            "the valid ranges. Prints who answered and [[sites.devices]] tables to paste into a "
            "config. Exit 0 if any unit answered, 1 if none did or the gateway is unreachable."
        ),
    )
    scan.add_argument("--host", required=True, help="the gateway's address")
    scan.add_argument("--port", type=int, default=502, help="Modbus TCP port (default 502)")
    scan.add_argument("--units", default="1-247", help="unit ids, e.g. 1-247 or 1,2,5-9 (default 1-247)")
    scan.add_argument("--profile", help="check the answers as this kind of device, e.g. fire_pressure")
    scan.add_argument("--timeout", type=float, default=0.3, help="seconds to wait per unit (default 0.3)")
    _json_option(scan)
    scan.set_defaults(func=_scan)

    watch = cmds.add_parser(
        "watch",
        help="devices decoded live, full screen (r: raw registers, q: quit)",
        description=(
            "Poll devices and show every decoded field live with its unit and valid range, values "
            "that changed highlighted, values out of range in red with why, and the alert rules' "
            "state. Devices from a config (all, or the ones named), or one device from "
            "--profile/--host. Keys: r raw registers, q quit."
        ),
    )
    watch.add_argument("devices", nargs="*", metavar="DEVICE", help="SITE/DEVICE or DEVICE from the config")
    watch.add_argument("--config", type=Path, help="the agent's config")
    watch.add_argument("--profile", help="without a config: the device's kind, e.g. charger")
    watch.add_argument("--host", help="without a config: the device's or gateway's address")
    watch.add_argument(
        "--port", type=int, default=502, help="without a config: Modbus TCP port (default 502)"
    )
    watch.add_argument("--unit", type=int, default=None, help="without a config: unit id")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    watch.set_defaults(func=_watch)


def _add_service_tools(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The agent as a service: install it, ask its health."""
    status = cmds.add_parser(
        "status",
        help="a running agent's health, from its /health",
        description=(
            "Ask a running agent for its health (the /health it serves on [agent] metrics) and print "
            "it: devices online, the buffer, writes, MQTT, alerts pending or firing, errors by device. "
            "Exit 0 if every device is online, 1 if some are not or the agent does not answer."
        ),
    )
    where = status.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="e.g. http://127.0.0.1:9464")
    where.add_argument("--config", type=Path, help="the agent's config (its [agent] metrics)")
    _json_option(status)
    status.set_defaults(func=_status)

    config = cmds.add_parser("config", help="write a first config for a site")
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = actions.add_parser(
        "new",
        help="a config from flags, scan results or answers, checked before it is written",
        description=(
            "Write a config for one site: the store, the broker if there are MQTT devices, and the "
            "devices, given as KIND@HOST[:PORT][/UNIT][=ID] (Modbus) or KIND=ID (MQTT), or taken from "
            "a saved `linli edge scan --profile` output. On a terminal, what is missing is asked for. "
            "The result is checked as `linli edge check` checks it; nothing is written if it fails."
        ),
    )
    new.add_argument("--site", help="the site's id, e.g. ronghua-1")
    new.add_argument("--agent", help="the agent's name (default: SITE-edge)")
    new.add_argument("--writer", choices=("influxdb2", "influxdb1"), default="influxdb2")
    new.add_argument(
        "--url", default="http://127.0.0.1:8086", help="the store (default http://127.0.0.1:8086)"
    )
    new.add_argument("--org", default="linli", help="InfluxDB 2 organisation (default linli)")
    new.add_argument("--bucket", default="linli", help="InfluxDB 2 bucket, or 1.x database (default linli)")
    new.add_argument("--mqtt-host", help="the broker, when there are MQTT devices (default 127.0.0.1)")
    new.add_argument(
        "--mqtt-port", type=port_number, help="the broker's port (default 1883; 8883 is usual with TLS)"
    )
    new.add_argument("--device", action="append", default=[], metavar="SPEC", help="a device (repeat)")
    new.add_argument(
        "--from-scan", action="append", default=[], type=Path, metavar="FILE",
        help="devices from a saved `linli edge scan --profile KIND` output (repeat)",
    )  # fmt: skip
    new.add_argument("--out", type=Path, required=True, help="the config file to write")
    new.add_argument("--force", action="store_true", help="replace an existing file")
    new.set_defaults(func=_config_new)

    install = cmds.add_parser(
        "install",
        help="run the agent as a systemd service that survives reboots",
        description=(
            "Check the config, then make a system user 'linli', write a systemd unit (state in "
            "/var/lib/linli, restart on failure, sandboxed: ProtectSystem=strict and more) and enable "
            "and start it. --dry-run prints the unit and changes nothing. Needs root otherwise."
        ),
    )
    install.add_argument(
        "--config", type=Path, required=True, help="the agent's config, e.g. /etc/linli/edge.toml"
    )
    install.add_argument("--name", default="linli-edge", help="the unit's name (default linli-edge)")
    install.add_argument(
        "--env-file",
        type=Path,
        help="secrets for the agent (LINLI_MQTT_PASSWORD=...), mode 0600, e.g. /etc/linli/edge.env",
    )
    install.add_argument("--dry-run", action="store_true", help="print the unit, change nothing")
    install.add_argument("--no-start", action="store_true", help="enable it, start it at the next boot")
    install.set_defaults(func=_install)


def _load(path: Path) -> EdgeConfig | None:
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


def _run(args: argparse.Namespace) -> int:
    from linli.edge.agent import Agent, Reload
    from linli.edge.buffer import BufferInUseError
    from linli.edge.view import run_view

    config = _load(args.config)
    if config is None:
        return 2
    setup_logging(config.agent.log_level)
    try:
        agent = Agent(config)
    except BufferInUseError as exc:
        print(f"linli edge run: {exc}", file=sys.stderr)
        return 1

    def load() -> EdgeConfig | None:
        log.info("reload: reading %s", args.config)
        return _load(args.config)  # the problems, if any, go to stderr like at start

    async def main(stop: asyncio.Event) -> int:
        # SIGHUP: the new config takes effect, the buffer and the MQTT session stay.
        reload = Reload(load)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload.wanted.set)
        view = asyncio.create_task(run_view(agent, stop)) if args.view else None
        complete = await agent.run(stop, reload=reload)
        if view is not None:
            await view
        return 0 if complete else 1

    return run_until_signal(main)


def _check(args: argparse.Namespace) -> int:
    from linli.catalog.wording import plural
    from linli.edge.agent import Agent
    from linli.edge.buffer import DurableBuffer

    config = _load(args.config)
    if config is None:
        return 2
    # A check touches nothing on disk: the agent gets a buffer in memory.
    agent = Agent(config, buffer=DurableBuffer(Path(":memory:"), max_bytes=1))
    devices = plural(len(config.devices()), "device")
    print(f"{args.config}: ok, {devices}, writer {config.writer.kind} {config.writer.url}")
    print(f"  buffer {config.buffer_path()}, at most {config.buffer.max_mb:g} MB, sync {config.buffer.sync}")
    for poller in agent.pollers:
        reads = ", ".join(f"{r.table}@{r.address}+{r.count}" for r in poller.reads)
        print(f"  {poller.name:<30} {poller.endpoint.name} unit {poller.unit}: {reads}")
        print(f"  {'':<30} {_stored_summary(poller)}")
    if agent.mqtt is not None and config.mqtt is not None:
        filters = ", ".join(f"{f} (QoS {q})" for f, q in agent.mqtt.filters.items())
        print(f"  mqtt {config.mqtt.host}:{config.mqtt.port} as '{agent.mqtt.client_id}': {filters}")
        for dev in agent.mqtt.devices.values():
            print(
                f"  {dev.name:<30} mqtt {dev.profile.kind}, offline after {3 * dev.heartbeat_s:g}s of silence"
            )
    _print_alerting(agent)
    return _contact(agent, config) if args.contact else 0


def _stored_summary(poller: DevicePoller) -> str:
    """What report by exception does for a device, in one line."""
    bands = poller.report.bands
    if not bands:
        return "stored: every field at every poll"
    every = sorted({b.every_ms / 1000 for b in bands.values()})
    widths = ", ".join(f"{name} {b.width:g}" for name, b in sorted(bands.items()) if b.width)
    on_change = sum(1 for b in bands.values() if not b.width)
    return (
        f"stored by exception: {len(bands)} fields, at least every {'/'.join(f'{e:g}' for e in every)} s; "
        f"deadbands {widths or 'none'}; {on_change} on any change"
    )


def _contact(agent: Agent, config: EdgeConfig) -> int:
    """Ask the store and the broker whether they would take the agent; 1 if either refuses."""
    from linli.edge.mqtt import broker_refusal
    from linli.edge.sinks import WriteError

    failed = 0
    try:
        agent.writer.sink.check()
        print(f"  store {agent.writer.sink.target}: takes writes")
    except WriteError as exc:
        hint = " (create the database or bucket, or fix the [writer] credentials)" if exc.setup else ""
        print(f"  store: REFUSED: {exc}{hint}", file=sys.stderr)
        failed = 1
    finally:
        agent.writer.sink.close()
    if config.mqtt is not None:
        problem = broker_refusal(config.mqtt)
        where = f"{config.mqtt.host}:{config.mqtt.port}"
        if problem is None:
            print(f"  broker {where}: takes the connection")
        else:
            print(f"  broker {where}: REFUSED: {problem}", file=sys.stderr)
            failed = 1
    return failed


def _print_alerting(agent: Agent) -> None:
    """The rules in force, where their events go, and the interlocks, for the technician."""
    publisher = agent.alerting.publisher
    target = (
        f"{publisher.host}:{publisher.port} {publisher.topic}/..." if publisher.enabled else "not published"
    )
    print(f"  alerts: stored in 'alert'; {target}")
    for rules in agent.alerting.engine.rules.values():
        for rule in rules:
            scope = "/".join(x for x in (rule.site, rule.device) if x) or "all"
            scope += "".join(f", {k}={v}" for k, v in sorted(rule.when.items()))
            state = "" if rule.enabled else ", disabled"
            print(f"  rule {rule.id:<40} {rule.condition} {rule.limit:g} for {scope}{state}")
    for poller in agent.pollers:
        for lock in poller.interlocks:
            c = lock.config
            limit = f"> {c.above:g}" if c.above is not None else f"< {c.below:g}"
            where = "its port" if lock.per_port else "every port"
            print(f"  interlock {poller.name:<30} {c.field} {limit} -> {c.command} {where}")


def _probe(args: argparse.Namespace) -> int:
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


def _scan(args: argparse.Namespace) -> int:
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


def _status(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    url = args.url
    if url is None:
        config = _load(args.config)
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


def port_number(text: str) -> int:
    """A TCP port from the command line."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (1-65535)")
    return int(text)


def _install(args: argparse.Namespace) -> int:
    import os
    import subprocess

    from linli.edge.install import Unit, install, problems

    config_path = args.config.resolve()
    if _load(config_path) is None:
        return 2
    unit = Unit(
        name=args.name,
        config=config_path,
        executable=Path(sys.executable).parent / "linli",
        env_file=args.env_file.resolve() if args.env_file else None,
    )
    found = problems(unit)
    if args.dry_run:  # the unit is shown all the same, with what the real install would refuse
        print(unit.text(), end="")
        for problem in found:
            print(f"linli edge install: warning: {problem}; the install would refuse this", file=sys.stderr)
        return 0
    if found:
        for problem in found:
            print(f"linli edge install: {problem}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("linli edge install: run it as root (sudo), or with --dry-run to see the unit", file=sys.stderr)
        return 2
    try:
        for step in install(unit, start=not args.no_start):
            print(step)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"linli edge install: {exc}", file=sys.stderr)
        return 1
    print(f"journalctl -u {args.name} -f   # its log; `linli edge status --config {config_path}` its health")
    return 0


def _watch(args: argparse.Namespace) -> int:
    from linli.catalog.profile import get_profile
    from linli.edge.alerting import configured_rules
    from linli.edge.config import EdgeConfig
    from linli.edge.modbus import DevicePoller, Endpoint
    from linli.edge.rules import RuleEngine
    from linli.edge.watch import Watch, run

    if (args.config is None) == (args.profile is None or args.host is None):
        print("linli edge watch: give --config, or --profile and --host", file=sys.stderr)
        return 2
    if args.config is not None:
        config = _load(args.config)
        if config is None:
            return 2
    else:
        try:
            profile = get_profile(args.profile)
        except KeyError as exc:
            print(f"linli edge watch: {exc.args[0]}", file=sys.stderr)
            return 2
        config = EdgeConfig.model_validate({
            "writer": {"kind": "influxdb1", "url": "http://127.0.0.1:1", "database": "watch"},
            "sites": [{"id": "watch", "devices": [{
                "id": profile.kind, "profile": profile.kind, "host": args.host, "port": args.port,
                "unit": args.unit, "interval": max(args.interval, 0.5), "timeout": min(0.5, args.interval),
            }]}],
        })  # fmt: skip
    wanted = set(args.devices)
    pollers = []
    endpoints: dict[tuple[str, int], Endpoint] = {}
    for site, device in config.devices():
        profile = get_profile(device.profile)
        if profile.modbus is None or (wanted and not wanted & {device.id, f"{site.id}/{device.id}"}):
            continue
        endpoint = endpoints.setdefault(
            (device.host, device.port), Endpoint(device.host, device.port, device.timeout)
        )
        pollers.append(
            DevicePoller(site=site.id, device=device, profile=profile, endpoint=endpoint, emit=lambda _: None)
        )
    if not pollers:
        print(
            "linli edge watch: no Modbus device matches " + (" ".join(wanted) or "the config"),
            file=sys.stderr,
        )
        return 2
    watch = Watch(pollers, RuleEngine(configured_rules(config), edge="watch"))
    return run_until_signal(lambda stop: run(watch, args.interval, stop))


def _config_new(args: argparse.Namespace) -> int:
    import tempfile

    from linli.catalog.wording import plural
    from linli.edge.newconfig import NewConfig, ask_devices, from_scan, parse_device

    if args.out.exists() and not args.force:
        print(f"linli edge config new: {args.out} exists; --force to replace it", file=sys.stderr)
        return 2
    asking = sys.stdin.isatty()
    site = args.site or (input("site id (e.g. ronghua-1): ").strip() if asking else "")
    if not site:
        print("linli edge config new: give --site", file=sys.stderr)
        return 2
    taken: set[str] = set()
    try:
        devices = [parse_device(d, taken) for d in args.device]
        for path in args.from_scan:
            devices += from_scan(path, taken)
    except (ValueError, KeyError, OSError) as exc:
        print(
            f"linli edge config new: {exc.args[-1] if isinstance(exc, OSError) else exc.args[0]}",
            file=sys.stderr,
        )
        return 2
    if not devices and asking:
        devices = ask_devices(input, taken)
    writer = {"kind": args.writer, "url": args.url}
    writer.update(
        {"org": args.org, "bucket": args.bucket} if args.writer == "influxdb2" else {"database": args.bucket}
    )
    new = NewConfig(site, args.agent or f"{site}-edge", writer, args.mqtt_host, devices, args.mqtt_port)
    with tempfile.TemporaryDirectory() as tmp:
        draft = Path(tmp) / args.out.name
        draft.write_text(new.text(), encoding="utf-8")
        if _load(draft) is None:  # its problems are printed
            return 2
    args.out.write_text(new.text(), encoding="utf-8")
    print(f"wrote {args.out}: site {site}, {plural(len(devices), 'device')}")
    print(f"next: linli edge check --config {args.out} --contact")
    return 0
