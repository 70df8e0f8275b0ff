"""The README's commands, as printed, run as a newcomer runs them.

Its shell blocks are read from README.md itself: the demo's lines are run from the checkout,
each until its live view answers, then stopped with Ctrl-C (SIGINT to its process group, as a
terminal sends it), which must flush and exit 0; the test command is the one CI runs (it is not
run again from inside the tests); and the first one-shot commands of "Using it" run as printed.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from support import wait_for
from test_demo_district import Output

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
STARTUP_S = 300  # set-up, then every server of the district, on a loaded machine


def blocks() -> list[list[str]]:
    """Each ```sh block's commands, comments and blank lines left out."""
    found = re.findall(r"```sh\n(.*?)```", README, re.S)
    return [[c for line in b.splitlines() if (c := re.sub(r"\s+#.*$", "", line).strip())] for b in found]


def block_with(first: str) -> list[str]:
    [block] = [b for b in blocks() if b and b[0].startswith(first)]
    return block


def demo_lines() -> list[str]:
    return block_with("scripts/demo")


def test_the_readme_s_test_command_is_what_ci_runs() -> None:
    assert block_with("scripts/test") == ["scripts/test"]
    last = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()][-1]
    assert last == "scripts/check"
    check = [line for line in (ROOT / "scripts" / "check").read_text().splitlines() if line.strip()]
    assert check[-1] == 'scripts/test "$@"'
    # Nothing in between skips or selects tests.
    assert all(not line.startswith(".venv/bin/python -m pytest") for line in check)


@pytest.mark.servers
@pytest.mark.parametrize("line", demo_lines())
def test_the_readme_s_demo_lines_run_as_printed_and_stop_flushed_on_ctrl_c(line: str) -> None:
    assert line.startswith("scripts/demo")
    proc = subprocess.Popen(
        ["bash", "-c", line], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    out = Output(proc)
    try:
        # The live view's first line, piped: the agent runs.
        out.until(r"^(linli demo  \d{4}-|linli edge  devices online)", STARTUP_S)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    stopped = out.until(r"demo stopped: ([\d,]+) lines written to VictoriaMetrics, ([\d,]+) left in the", 10)
    assert code == 0, "".join(out.lines[-30:])
    assert int(stopped[1].replace(",", "")) > 0
    assert stopped[2] == "0"


@pytest.mark.servers
def test_the_readme_s_first_commands_on_a_charger_run_as_printed(tmp_path: Path) -> None:
    """`linli sim charger --port 5020 ...` beside `linli edge probe ... --port 5020`, and the
    register map, with the set-up's virtualenv activated as the README says."""
    using = block_with(". .venv/bin/activate")
    sim, probe, doc = (next(c for c in using if c.startswith(p)) for p in (
        "linli sim charger --port 5020 --stations 10", "linli edge probe", "linli catalog doc"
    ))  # fmt: skip

    def run(command: str, **kwargs: object) -> subprocess.Popen[str]:
        script = f". .venv/bin/activate && exec {command}"
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            ["bash", "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, **kwargs,
        )  # fmt: skip

    shown = run(doc).communicate(timeout=120)[0]
    assert "| " in shown, shown[:2000]  # a Markdown table
    assert "charger" in shown.lower(), shown[:2000]
    stations = run(sim)
    try:
        answer = ""

        def answered() -> bool:
            nonlocal answer
            probed = run(probe)
            answer = probed.communicate(timeout=60)[0]
            return probed.returncode == 0

        wait_for(answered, f"{shlex.split(probe)[:3]} to answer", 120)
        assert "total_power" in answer or "power" in answer.lower(), answer[:2000]
    finally:
        os.killpg(stations.pid, signal.SIGINT)
        stations.wait(30)


def test_the_readme_s_opening_names_every_kind_of_person_it_serves() -> None:
    opening = README.split("## Architecture")[0]
    for people in (
        "operations-center staff",
        "technicians",
        "alert subscribers",
        "bin-room keepers",
        "property staff",
    ):
        assert f"**{people}**" in opening, people
