"""`linli cloud run`: the alert notifier and its API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from linli.catalog.commands import run_until_signal, setup_logging

if TYPE_CHECKING:
    from linli.cloud.notifier.config import NotifierConfig
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
    _add_silence_commands(cmds)


def _add_silence_commands(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    silence = cmds.add_parser(
        "silence",
        help="silences: add, list, expire, delete",
        description=(
            "Silences are kept in the notifier's state, so these work beside running notifiers and "
            "hold on every replica. Whoever can read the config's state is an admin here: a silence "
            "may hold life-safety alerts. Each is in the audit log."
        ),
    )
    actions = silence.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="silence the alerts matching every --match for --hours")
    add.add_argument(
        "--match", action="append", required=True, metavar="LABEL=VALUE",
        help="site, rule, kind, device, edge, severity or fingerprint = a value or a pattern (*.silent*)",
    )  # fmt: skip
    add.add_argument("--hours", type=float, required=True)
    add.add_argument("--comment", required=True, help="why, as the audit log will say")
    listed = actions.add_parser("list", help="silences not ended yet")
    ended = actions.add_parser("expire", help="end a silence now (it stays listed as ended)")
    ended.add_argument("--id", required=True)
    deleted = actions.add_parser("delete", help="forget a silence, running or ended")
    deleted.add_argument("--id", required=True)
    for sub in (add, listed, ended, deleted):
        sub.add_argument("--config", type=Path, required=True, help="notifier TOML (its state)")
        sub.set_defaults(func=_silence)


def _silence(args: argparse.Namespace) -> int:
    import getpass
    import time

    from linli.catalog.i18n import DISTRICT_ZONE, iso
    from linli.cloud.notifier import silences
    from linli.cloud.notifier.store import Store

    config = _config(args.config)
    if config is None:
        return 2
    store, book, now = Store(config.state), _book(config), time.time()
    author = f"cli:{getpass.getuser()}"
    if args.action == "add":
        pairs = [m.partition("=") for m in args.match]
        try:
            made = silences.make(
                config, {label: value for label, _, value in pairs},
                starts_s=now, duration_s=args.hours * 3600, author=author, comment=args.comment, admin=True,
            )  # fmt: skip
        except ValueError as exc:  # pydantic's ValidationError too: a label no alert has
            print(f"linli cloud silence: {exc}", file=sys.stderr)
            return 2
        store.put_silence(made)
        book.audit(author, "silence", made.id, made.model_dump_json())
        print(made.id)
    elif args.action == "list":
        for s in store.silences(now):
            until = iso(s.ends_s, DISTRICT_ZONE)
            print(f"{s.id}\t{_matchers(s.matchers.items())}\tuntil {until}\t{s.author}\t{s.comment}")
    elif args.action == "delete":
        if silences.delete(config, store, args.id, admin=True) is None:
            print(f"linli cloud silence: no silence {args.id}", file=sys.stderr)
            return 1
        book.audit(author, "delete_silence", args.id)
        print(f"deleted {args.id}")
    else:
        if silences.expire(store, args.id, now) is None:
            print(f"linli cloud silence: no running silence {args.id}", file=sys.stderr)
            return 1
        book.audit(author, "expire_silence", args.id)
        print(f"expired {args.id}")
    return 0


def _matchers(matchers: Iterable[tuple[str, str]]) -> str:
    return ",".join(f"{label}={value}" for label, value in matchers)


def _config(path: Path) -> NotifierConfig | None:
    """The notifier's config, or None once the problems are printed."""
    from linli.catalog.errors import ConfigError
    from linli.cloud.notifier.config import load_notifier_config

    try:
        return load_notifier_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    from linli.catalog.errors import ConfigError
    from linli.catalog.tls import tls_problems
    from linli.cloud.notifier.service import Service, token_from_env

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
