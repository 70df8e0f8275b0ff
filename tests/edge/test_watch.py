"""`linli edge watch` as a person uses it: in a terminal (tmux), against the simulator."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from linli.demo.servers import free_port
from support import start_sim, stop_process, unique, wait_for

pytestmark = pytest.mark.servers  # every test here starts a server or a process

REVERSE = "\x1b[1;7m"  # how Rich marks a value that changed since the last poll


class Terminal:
    """A tmux session running one command, read with capture-pane and typed into with send-keys."""

    def __init__(self, command: str, rows: int = 50) -> None:
        binary = shutil.which("tmux")
        if binary is None:
            pytest.fail("tmux is not installed: apt-get install -y tmux", pytrace=False)
        self.tmux = binary
        self.name = unique("watch")
        # A technician's terminal: 160 columns by 50 rows, which a 10-port charger must fit.
        # The size is the terminal's: no COLUMNS or LINES from the test's own environment.
        self._run(
            "new-session",
            "-d",
            "-s",
            self.name,
            "-x",
            "160",
            "-y",
            str(rows),
            f"env -u COLUMNS -u LINES {command}",
        )

    def _run(self, *args: str) -> str:
        return subprocess.run(
            [self.tmux, *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout

    def screen(self, *, escapes: bool = False) -> str:
        return self._run("capture-pane", "-p", *(["-e"] if escapes else []), "-t", self.name)

    def keys(self, keys: str) -> None:
        self._run("send-keys", "-t", self.name, keys)

    def close(self) -> None:
        subprocess.run(
            [self.tmux, "kill-session", "-t", self.name], capture_output=True, timeout=10, check=False
        )


@pytest.fixture
def overheating() -> Iterator[int]:
    """A charger whose port 1 overheats, a hundred times faster than real time."""
    port = free_port()
    sim = start_sim("charger", "--port", str(port), "--time-scale", "100", "--fault", "1:overheat")
    yield port
    stop_process(sim)


def line_of(screen: str, *words: str) -> str:
    return next((line for line in screen.splitlines() if all(w in line for w in words)), "")


def port_row(screen: str, port: int) -> str:
    """The grid's row of a charger's port."""
    return next((line for line in screen.splitlines() if re.match(rf"^│ +{port} │", line)), "")


def test_watch_shows_fields_changes_rule_states_and_raw_registers(overheating: int, tmp_path: Path) -> None:
    linli = Path(sys.executable).parent / "linli"
    done = tmp_path / "exit"
    term = Terminal(
        f"{linli} edge watch --profile charger --host 127.0.0.1 --port {overheating} --interval 0.3; "
        f"echo $? > {done}; sleep 60"
    )
    try:
        wait_for(lambda: re.search(r"poll [1-9]", term.screen()) is not None, "the first poll on screen", 20)
        screen = term.screen()
        assert "127.0.0.1" in screen
        assert "online" in screen
        voltage = line_of(screen, "voltage")
        assert "V" in voltage
        assert "0..300" in voltage  # the valid range beside the value
        # Every port of the 10, a row each, in a 50-row terminal; units and ranges in the heading.
        assert port_row(screen, 10)
        assert "degC -40..150" in screen
        # Enum meanings spelled out: the overheating port is charging.
        wait_for(lambda: "(charging)" in port_row(term.screen(), 1), "port 1 charging", 10)
        # The energy counter moves every poll: its value is highlighted as changed.
        wait_for(lambda: REVERSE in line_of(term.screen(escapes=True), "energy_total"), "a change shown", 10)
        # Port 1 overheats: its rule goes to firing, on that row.
        wait_for(
            lambda: "charger.temperature.above: firing" in port_row(term.screen(), 1),
            "the temperature rule firing",
            60,
        )
        assert "firing" not in port_row(term.screen(), 2)
        term.keys("r")
        wait_for(lambda: "input 100+" in term.screen(), "the raw registers", 10)
        assert "voltage" not in term.screen()
        term.keys("r")
        wait_for(lambda: "voltage" in term.screen(), "the fields again", 10)
        term.keys("q")
        wait_for(done.exists, "watch to quit", 10)
        assert done.read_text().strip() == "0"
    finally:
        term.close()


# Select Graphic Rendition parameters that set a colour (foreground, background, bright, 256/RGB);
# 39 and 49 put back the terminal's own colours.
COLOUR = re.compile(r"^(3[0-8]|4[0-8]|9[0-7]|10[0-7])$")


def colours(screen: str) -> list[str]:
    """The colour parameters of the escape codes on a screen captured with its escapes."""
    return [
        p for codes in re.findall(r"\x1b\[([0-9;]*)m", screen) for p in codes.split(";") if COLOUR.match(p)
    ]


def test_no_color_leaves_the_colours_out_and_the_highlights_in(overheating: int) -> None:
    linli = Path(sys.executable).parent / "linli"
    common = f"edge watch --profile charger --host 127.0.0.1 --port {overheating} --interval 0.3"
    coloured = Terminal(f"{linli} {common}", rows=24)
    plain = Terminal(f"env NO_COLOR=1 {linli} {common}", rows=24)
    try:
        for term in (coloured, plain):

            def highlighted(term: Terminal = term) -> bool:
                return REVERSE in term.screen(escapes=True)

            wait_for(highlighted, "a changed value highlighted", 20)
        assert colours(coloured.screen(escapes=True))  # "online" in green, at least
        assert colours(plain.screen(escapes=True)) == []
    finally:
        coloured.close()
        plain.close()


def test_what_does_not_fit_the_terminal_is_announced_not_cut(overheating: int) -> None:
    linli = Path(sys.executable).parent / "linli"
    term = Terminal(f"{linli} edge watch --profile charger --host 127.0.0.1 --port {overheating}", rows=24)
    try:
        wait_for(lambda: re.search(r"poll [1-9]", term.screen()) is not None, "the first poll on screen", 20)
        last = term.screen().rstrip().splitlines()[-1]
        assert re.fullmatch(r"v \d+ more rows below: make the window taller", last.strip()), last
    finally:
        term.close()


def test_watch_without_a_device_says_what_to_give() -> None:
    bare = subprocess.run(
        [sys.executable, "-m", "linli.cli", "edge", "watch"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bare.returncode == 2
    assert "give --config, or --profile and --host" in bare.stderr
