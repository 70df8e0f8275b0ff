"""`linli cloud token` and `linli waste token`: create, revoke and list a service's API tokens.

The tokens are kept, hashed, in the service's own state, so these work beside the running
service; a revoked token is refused at its next request.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from linli.cloud.scope import Scope

if TYPE_CHECKING:  # the database layer is the cloud extra's; `--help` works without it
    from linli.cloud.tokens import TokenBook

# The state a config names, or None once the config's problems are printed.
StateOf = Callable[[Path], str | Path | None]


def add_token_commands(
    cmds: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    prog: str,
    description: str,
    state_of: StateOf,
    scopes: tuple[Scope, ...],
) -> None:
    """Register `token create|revoke|list` under a service's command; `prog` names it in messages."""
    token = cmds.add_parser(
        "token", help="the API's tokens: create (printed once), revoke, list", description=description
    )
    actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a token and print it, once")
    create.add_argument("--scope", required=True, choices=[str(s) for s in scopes])
    create.add_argument("--name", required=True, help="who or what holds it, as the audit log will say")
    if Scope.BOOK in scopes:
        create.add_argument(
            "--compound",
            action="append",
            default=[],
            help="book scope: a compound the link may book at (repeat for each; required)",
        )
        create.add_argument(
            "--office",
            default=None,
            help="book scope: the office whose bookings the link sees (default: --name); a new link "
            "for the same office sees the bookings of the one it replaces",
        )
    revoke = actions.add_parser("revoke", help="refuse a token from now on")
    revoke.add_argument("--name", required=True)
    listed = actions.add_parser("list", help="every token, without its secret")
    for sub in (create, revoke, listed):
        sub.add_argument("--config", type=Path, required=True, help="the service's TOML (its state)")
        sub.set_defaults(func=functools.partial(_token, prog=prog, state_of=state_of))


def _token(args: argparse.Namespace, *, prog: str, state_of: StateOf) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from linli.cloud.db import describe
    from linli.cloud.tokens import TokenBook

    state = state_of(args.config)
    if state is None:
        return 2
    try:
        book = TokenBook(state)
    except (OSError, SQLAlchemyError) as exc:
        print(f"{prog}: state {describe(state)}: {exc}", file=sys.stderr)
        return 1
    try:
        if args.action == "create":
            return _create(args, book, prog)
        if args.action == "revoke":
            return _revoke(args, book, prog)
        return _list(book)
    finally:
        book.close()


def _create(args: argparse.Namespace, book: TokenBook, prog: str) -> int:
    from linli.cloud.tokens import TokenError

    compounds: list[str] = getattr(args, "compound", [])
    try:
        token = book.create(
            args.name, Scope(args.scope), office=getattr(args, "office", None), compounds=compounds
        )
    except TokenError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    bound = f"; compounds {', '.join(sorted(set(compounds)))}" if compounds else ""
    book.audit(f"cli:{getpass.getuser()}", "token_create", args.name, f"scope {args.scope}{bound}")
    print(token)
    print(f"token '{args.name}' ({args.scope}): shown this once; keep it secret", file=sys.stderr)
    if compounds:
        print("the booking link: the API's address, then /book#token=<the token>", file=sys.stderr)
    return 0


def _revoke(args: argparse.Namespace, book: TokenBook, prog: str) -> int:
    if not book.revoke(args.name):
        print(f"{prog}: no live token named '{args.name}'", file=sys.stderr)
        return 1
    book.audit(f"cli:{getpass.getuser()}", "token_revoke", args.name)
    print(f"revoked '{args.name}'")
    return 0


def _list(book: TokenBook) -> int:
    for t in book.tokens():
        state = "live" if t["revoked_ms"] is None else "revoked"
        bound = f"\t{t['binding']}" if t["binding"] else ""
        print(f"{t['name']}\t{t['scope']}\t{state}\tid {t['id']}{bound}")
    return 0
