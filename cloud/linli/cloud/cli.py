"""`linli cloud run`: the alert notifier and its API."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from linli.cli_support import run_until_signal, setup_logging


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `linli cloud`."""
    cloud = subparsers.add_parser("cloud", help="the alert notifier and its HTTP API")
    cmds = cloud.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = cmds.add_parser(
        "run",
        help="take alert events from the broker and notify subscribers",
        description=(
            "Subscribe to every edge's alert events (an MQTT 5 shared subscription: start several "
            "to share the load), notify subscribers by webhook, WeCom, DingTalk, Feishu, email or "
            "MQTT, and serve the HTTP API (token from the variable the config names)."
        ),
    )
    run.add_argument("--config", type=Path, required=True, help="notifier TOML")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from linli.catalog.errors import ConfigError
    from linli.cloud.config import load_notifier_config
    from linli.cloud.service import Service, token_from_env

    try:
        config = load_notifier_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    token = token_from_env(config)
    if not token:
        print(f"linli cloud run: set {config.token_env} to the API's bearer token", file=sys.stderr)
        return 2
    setup_logging(args.log_level)
    try:
        service = Service(config, token)
    except (OSError, sqlite3.Error) as exc:
        print(f"linli cloud run: state file {config.state}: {exc}", file=sys.stderr)
        return 1
    return run_until_signal(service.run)
