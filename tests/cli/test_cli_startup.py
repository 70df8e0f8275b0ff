"""The `linli` command starts quickly (building its parser imports none of the heavy libraries),
says its version and completes in the shell.

`benchmarks/cli_startup.py` measures the start-up's CPU time; this guards its cause without timing.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import version

import pytest

from support import linli

pytestmark = pytest.mark.servers  # every test here starts a server or a process

# What the agent, the simulators, the services and the dashboards bring: each costs tens to
# hundreds of milliseconds of CPU to import, and a `--help` needs none of them.
HEAVY = (
    "influxdb_client",
    "paho",
    "pymodbus",
    "fastapi",
    "sqlalchemy",
    "shapely",
    "numpy",
    "matplotlib",
    "pydantic",
    "pyproj",
    "networkx",
    "httpx",
    "rich",
    "prometheus_client",
)

IMPORTED_BY_HELP = """
import json, sys
from linli.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["edge", "status", "--help"],
        ["edge", "probe", "--help"],
        ["sim", "district", "--help"],
        ["waste", "stats", "--help"],
        ["cloud", "--help"],
        ["dashboards", "picture", "--help"],
        ["catalog", "doc", "--help"],
        ["--version"],
    ],
    ids=" ".join,
)
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, "-c", IMPORTED_BY_HELP, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert run.stdout.strip(), "the command printed nothing"
    imported = set(json.loads(run.stderr.strip().splitlines()[-1]))
    assert "linli" in imported
    assert sorted(imported.intersection(HEAVY)) == []


def test_version_is_the_installed_distribution_s() -> None:
    answer = linli("--version")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == f"linli {version('linli')}\n"


def complete(script: str, words: list[str]) -> list[str]:
    """What bash offers after `words` (the last one being typed), with linli's completion loaded."""
    bash = shutil.which("bash")
    assert bash is not None
    line = " ".join(words)
    program = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMP_LINE={shlex.quote(line)}; "
        f'COMP_POINT=${{#COMP_LINE}}; _shtab_linli; printf "%s\\n" "${{COMPREPLY[@]}}"'
    )
    run = subprocess.run([bash, "-c", program], capture_output=True, text=True, timeout=30, check=True)
    return run.stdout.split()


def test_bash_completes_commands_and_options() -> None:
    script = linli("completion", "bash")
    assert script.returncode == 0, script.stderr
    assert complete(script.stdout, ["linli", "ed"]) == ["edge"]
    assert complete(script.stdout, ["linli", "edge", "st"]) == ["status"]
    assert {"--url", "--config", "--json"} <= set(complete(script.stdout, ["linli", "edge", "status", "--"]))
    assert set(complete(script.stdout, ["linli", "waste", "stats", "--of", ""])) == {"tonnage", "service"}


def test_zsh_and_tcsh_get_a_script_too() -> None:
    for shell, mark in (("zsh", "#compdef linli"), ("tcsh", "complete linli")):
        script = linli("completion", shell)
        assert script.returncode == 0, script.stderr
        assert mark in script.stdout
    assert linli("completion", "fish").returncode == 2
