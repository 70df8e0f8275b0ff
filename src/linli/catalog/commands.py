"""Helpers shared by the command-line front ends."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

Main = Callable[[asyncio.Event], Coroutine[Any, Any, object]]


def run_until_signal(main: Main) -> int:
    """Run `main(stop)` until it returns or SIGINT/SIGTERM sets `stop`; exit code 0, or 1 on error."""

    async def runner() -> object:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    try:
        result = asyncio.run(runner())
    except OSError as exc:
        print(f"linli: {exc}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def print_json(found: dict[str, Any]) -> None:
    """A command's `--json` answer: one object on stdout, names as people write them."""
    print(json.dumps(found, ensure_ascii=False, indent=2))


def setup_logging(level: str = "info") -> None:
    """One line per event, with time and source."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # A line per HTTP request and per migration's docstring is noise in a service's log; what
    # matters from them is said once by linli (the schema's revision, a delivery that failed).
    for chatty in ("httpx", "httpcore", "alembic"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


def iso_time(text: str) -> float:
    """An ISO time with its UTC offset, as epoch seconds (an argparse type)."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}': expected an ISO time like 2021-01-08T18:00+08:00"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"'{text}': give a UTC offset, e.g. +08:00")
    return when.timestamp()
