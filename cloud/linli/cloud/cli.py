"""`linli cloud run`: the alert notifier and its API."""

from __future__ import annotations

import argparse
import getpass
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

    token = cmds.add_parser(
        "token",
        help="the API's tokens: create (printed once), revoke, list",
        description=(
            "Tokens are kept, hashed, in the notifier's state file, so these work beside a running "
            "notifier; a revoked token is refused at its next request. Scopes nest: read (the screen, "
            "dashboards) < ack (duty officers) < admin (subscriptions, tokens, the audit log). "
            "$LINLI_CLOUD_TOKEN, when set, is an admin token too."
        ),
    )
    actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a token and print it, once")
    create.add_argument("--scope", required=True, choices=("read", "ack", "admin"))
    create.add_argument("--name", required=True, help="who or what holds it, as the audit log will say")
    revoke = actions.add_parser("revoke", help="refuse a token from now on")
    revoke.add_argument("--name", required=True)
    listed = actions.add_parser("list", help="every token, without its secret")
    for sub in (create, revoke, listed):
        sub.add_argument("--config", type=Path, required=True, help="notifier TOML (its state file)")
        sub.set_defaults(func=_token)


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
    if not token and not any(t["revoked_ms"] is None for t in _book(config).tokens()):
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


def _token(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from linli.cloud.db import describe

    config = _config(args.config)
    if config is None:
        return 2
    try:
        book = _book(config)
    except (OSError, SQLAlchemyError) as exc:
        print(f"linli cloud token: state {describe(config.state)}: {exc}", file=sys.stderr)
        return 1
    return {"create": _create, "revoke": _revoke, "list": _list}[args.action](args, book)


def _create(args: argparse.Namespace, book: TokenBook) -> int:
    from linli.cloud.tokens import Scope, TokenError

    try:
        token = book.create(args.name, Scope(args.scope))
    except TokenError as exc:
        print(f"linli cloud token: {exc}", file=sys.stderr)
        return 2
    book.audit(f"cli:{getpass.getuser()}", "token_create", args.name, f"scope {args.scope}")
    print(token)
    print(f"token '{args.name}' ({args.scope}): shown this once; keep it secret", file=sys.stderr)
    return 0


def _revoke(args: argparse.Namespace, book: TokenBook) -> int:
    if not book.revoke(args.name):
        print(f"linli cloud token: no live token named '{args.name}'", file=sys.stderr)
        return 1
    book.audit(f"cli:{getpass.getuser()}", "token_revoke", args.name)
    print(f"revoked '{args.name}'")
    return 0


def _list(_args: argparse.Namespace, book: TokenBook) -> int:
    for t in book.tokens():
        state = "live" if t["revoked_ms"] is None else "revoked"
        print(f"{t['name']}\t{t['scope']}\t{state}\tid {t['id']}")
    return 0
