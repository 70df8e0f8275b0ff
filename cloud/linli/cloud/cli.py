"""`linli cloud run`: the alert notifier and its API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from linli.cli_support import run_until_signal, setup_logging

if TYPE_CHECKING:
    from linli.cloud.config import NotifierConfig
    from linli.cloud.tokens import TokenBook


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

    from linli.cloud.scope import Scope
    from linli.cloud.token_cli import add_token_commands

    add_token_commands(
        cmds,
        prog="linli cloud token",
        description=(
            "Tokens are kept, hashed, in the notifier's state file, so these work beside a running "
            "notifier; a revoked token is refused at its next request. Scopes nest: read (the screen, "
            "dashboards) < ack (duty officers) < admin (subscriptions, tokens, the audit log). "
            "$LINLI_CLOUD_TOKEN, when set, is an admin token too."
        ),
        state_of=_state,
        scopes=(Scope.READ, Scope.ACK, Scope.ADMIN),
    )


def _config(path: Path) -> NotifierConfig | None:
    """The notifier's config, or None once the problems are printed."""
    from linli.catalog.errors import ConfigError
    from linli.cloud.config import load_notifier_config

    try:
        return load_notifier_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    from linli.catalog.errors import ConfigError
    from linli.catalog.tls import tls_problems
    from linli.cloud.service import Service, token_from_env

    config = _config(args.config)
    if config is None:
        return 2
    missing = tls_problems(config.broker.tls, "broker.tls")
    if missing:
        print(ConfigError(args.config, missing), file=sys.stderr)
        return 2
    token = token_from_env(config)
    if not token and not _book(config).live():
        print(
            f"linli cloud run: set {config.token_env} to the API's bearer token, or create one with "
            f"`linli cloud token create --config {args.config} --scope admin --name NAME`",
            file=sys.stderr,
        )
        return 2
    from sqlalchemy.exc import SQLAlchemyError

    from linli.cloud.db import describe

    setup_logging(args.log_level)
    try:
        service = Service(config, token)
    except (OSError, SQLAlchemyError) as exc:
        print(f"linli cloud run: state {describe(config.state)}: {exc}", file=sys.stderr)
        return 1
    return run_until_signal(service.run)


def _book(config: NotifierConfig) -> TokenBook:
    from linli.cloud.tokens import TokenBook

    return TokenBook(config.state)


def _state(path: Path) -> str | None:
    config = _config(path)
    return None if config is None else config.state
