"""CLI start-up: the CPU time of `linli --help` and of every command's `--help`.

A technician's `linli edge status` should answer in a blink; the goal is under 0.3 s of CPU for
each. Each command line runs --runs times as a child process (the installed `linli` script, as a
person runs it); its CPU time is the child's user + system time from getrusage(RUSAGE_CHILDREN),
so the load of other processes on the machine does not count. Prints the median of each and the
slowest.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from linli.cli.main import build_parser


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the tree, the top level first."""
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, (*prefix, name))
    return found


def cpu_seconds(argv: list[str]) -> float:
    """The user + system CPU time of one run of `argv` to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command line (default 5)")
    parser.add_argument("--goal", type=float, default=0.3, help="CPU seconds each should stay under")
    args = parser.parse_args()
    linli = Path(sys.executable).parent / "linli"
    print(f"{platform.node()}: Python {platform.python_version()}, median of {args.runs} runs, {linli}")
    medians: dict[str, float] = {}
    for path in commands(build_parser()):
        argv = [str(linli), *path, "--help"]
        medians[" ".join(argv[1:])] = statistics.median(cpu_seconds(argv) for _ in range(args.runs))
    for line, seconds in medians.items():
        print(f"  {seconds * 1000:6.0f} ms CPU  linli {line}")
    worst = max(medians, key=medians.__getitem__)
    over = [line for line, s in medians.items() if s >= args.goal]
    print(
        f"{len(medians)} command lines; slowest {medians[worst] * 1000:.0f} ms (linli {worst}); "
        f"{len(over)} at or over {args.goal * 1000:.0f} ms"
    )
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
