"""`linli catalog ...`: list the device kinds and document their profiles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `linli catalog` and its commands."""
    catalog = subparsers.add_parser("catalog", help="device kinds and their register maps")
    cmds = catalog.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ls = cmds.add_parser("list", help="list the device kinds")
    ls.set_defaults(func=_list)
    doc = cmds.add_parser("doc", help="print (or write) a kind's storage schema and register map")
    doc.add_argument("kind", nargs="?", help="device kind; all kinds with --out")
    doc.add_argument("--out", type=Path, help="write KIND.md for every kind into this folder")
    doc.set_defaults(func=_doc)
    schema = cmds.add_parser("alert-schema", help="print (or write) the JSON Schema of alert events")
    schema.add_argument("--out", type=Path, help="write the schema to this file")
    schema.set_defaults(func=_alert_schema)


def alert_schema_text() -> str:
    """The alert event's JSON Schema, as committed in docs/."""
    from linli.catalog.alerts import AlertMessage

    return json.dumps(AlertMessage.model_json_schema(), indent=2, sort_keys=True) + "\n"


def _alert_schema(args: argparse.Namespace) -> int:
    text = alert_schema_text()
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


def _list(_args: argparse.Namespace) -> int:
    from linli.catalog.profile import builtin_profiles

    for kind, profile in builtin_profiles().items():
        print(f"{kind:<12} {profile.title}")
    return 0


def _doc(args: argparse.Namespace) -> int:
    # Imported here: the parser is built for every `linli` command, and profiles need pydantic.
    from linli.catalog.docs import profile_markdown
    from linli.catalog.profile import builtin_profiles, get_profile

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for kind, profile in builtin_profiles().items():
            (args.out / f"{kind}.md").write_text(profile_markdown(profile), encoding="utf-8")
        return 0
    if not args.kind:
        print("linli catalog doc: name a KIND, or give --out FOLDER", file=sys.stderr)
        return 2
    try:
        print(profile_markdown(get_profile(args.kind)), end="")
    except KeyError as exc:
        print(f"linli catalog doc: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0
