"""The `linli` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The shells `linli completion` writes a script for (shtab's).
SHELLS = ("bash", "zsh", "tcsh")


class _Version(argparse.Action):
    """`--version`: the installed distribution's version, looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        from importlib.metadata import version

        print(f"linli {version('linli')}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    from linli.cli import catalog as catalog_cli
    from linli.cli import dashboards as dashboards_cli
    from linli.cloud.broker import cli as broker_cli
    from linli.cloud.notifier import cli as cloud_cli
    from linli.cloud.waste import cli as waste_cli
    from linli.demo import chargers as demo
    from linli.edge import cli as edge_cli
    from linli.sim import cli as sim_cli

    parser = argparse.ArgumentParser(
        prog="linli",
        description="linli: smart-community devices over Modbus TCP and MQTT into InfluxDB and Grafana.",
    )
    parser.add_argument("--version", action=_Version, help="print linli's version and exit")
    subparsers = parser.add_subparsers(dest="area", required=True, metavar="AREA")
    demo.add_parser(subparsers)
    edge_cli.add_parser(subparsers)
    sim_cli.add_parser(subparsers)
    catalog_cli.add_parser(subparsers)
    dashboards_cli.add_parser(subparsers)
    cloud_cli.add_parser(subparsers)
    waste_cli.add_parser(subparsers)
    broker_cli.add_parser(subparsers)
    completion = subparsers.add_parser(
        "completion",
        help="print a shell completion script",
        description=(
            "Print the script that completes linli's commands and options in SHELL. For bash: "
            "linli completion bash > /etc/bash_completion.d/linli (or ~/.local/share/bash-completion/"
            "completions/linli); for zsh, into a folder of $fpath as _linli."
        ),
    )
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(func=_completion)
    return parser


def _completion(args: argparse.Namespace) -> int:
    import shtab

    parser = build_parser()
    _complete_paths(parser, shtab.FILE)
    print(shtab.complete(parser, args.shell), end="")
    return 0


def _complete_paths(parser: argparse.ArgumentParser, files: dict[str, Any]) -> None:
    """Options that take a file or folder complete with the shell's file names."""
    for action in parser._actions:
        if action.type is Path:
            action.complete = files  # type: ignore[attr-defined]  # shtab's convention
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _complete_paths(sub, files)


# The packages of each extra, by the name a failed import gives (see pyproject.toml).
EXTRAS = {
    "fastapi": "cloud",
    "uvicorn": "cloud",
    "starlette": "cloud",
    "google": "cloud",  # gtfs-realtime-bindings
    "vroom": "cloud",
    "networkx": "cloud",
    "cryptography": "cloud",
    "grafana_foundation_sdk": "dashboards",
    "grafana_client": "dashboards",
    "jsonschema": "dashboards",
    "matplotlib": "dashboards",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit codes: 0 ok, 1 failed at run time, 2 bad usage or config."""
    from linli.catalog import simtime

    # Before anything reads the time: a demo's processes share its simulated clock.
    simtime.install_from_env()
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as other Unix tools do.
        sys.stderr.close()
        return 0
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        command = " ".join(a for a in (args.area, getattr(args, "command", None)) if a)
        print(
            f"linli {command} needs the '{extra}' extra ({exc.name} is not installed): "
            f"pip install 'linli[{extra}]'",
            file=sys.stderr,
        )
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
