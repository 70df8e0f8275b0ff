"""`linli edge ...`: run the agent, check a config, probe a device on site."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from linli.catalog.commands import run_until_signal, setup_logging
from linli.edge import tools

# The parser is built for every `linli` command, `--help` included: the agent, its clients and
# pydantic are imported by the command that runs (see tests/cli/test_cli_startup.py).
if TYPE_CHECKING:
    from linli.edge.agent import Agent
    from linli.edge.config import EdgeConfig
    from linli.edge.modbus import DevicePoller

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
    probe.set_defaults(func=tools.probe)

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
    scan.set_defaults(func=tools.scan)

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
    status.set_defaults(func=tools.status)

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


def _run(args: argparse.Namespace) -> int:
    from linli.edge.agent import Agent, Reload
    from linli.edge.buffer import BufferInUseError
    from linli.edge.view import run_view

    config = tools.load(args.config)
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
        return tools.load(args.config)  # the problems, if any, go to stderr like at start

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

    config = tools.load(args.config)
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
    if tools.load(config_path) is None:
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
        config = tools.load(args.config)
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
        if tools.load(draft) is None:  # its problems are printed
            return 2
    args.out.write_text(new.text(), encoding="utf-8")
    print(f"wrote {args.out}: site {site}, {plural(len(devices), 'device')}")
    print(f"next: linli edge check --config {args.out} --contact")
    return 0
