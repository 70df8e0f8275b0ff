"""scripts/mutation leaves no server running: not those of a test session mutmut killed on its
time limit, nor any when the script itself is stopped with SIGTERM (`timeout`, a closed shell).

The script's `run` is driven with mutmut replaced by a stand-in that does what mutmut does to a
mutant's test session: the session starts a real InfluxDB and Mosquitto (each in a session of
its own, as the test fixtures start them), and is then killed, or left running.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support import wait_for

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

# A mutant's test session: its servers' pids written, then it waits to be killed. mutmut's
# workers set their process title, which overwrites their environment as /proc shows it.
SESSION = """
import os, sys, time
from pathlib import Path
from setproctitle import setproctitle
from linli.demo.servers import start_influxdb1, start_mosquitto
setproctitle("mutmut: a test session")
folder = Path(sys.argv[1])
servers = [start_influxdb1(folder / "influx"), start_mosquitto(folder / "mosquitto")]
(folder / "runners").write_text(f"{os.getpid()} {os.getppid()}")  # the session, mutmut
(folder / "pids.new").write_text(" ".join(str(s.proc.pid) for s in servers))
(folder / "pids.new").rename(folder / "pids")
time.sleep(3600)
"""

# mutmut: one session that lives on (`hang`: and nothing else); another killed on its time
# limit, whose servers must then be seen gone within 60 s (else exit 1) while the first's
# still run (else exit 2).
MUTMUT = """
import os, signal, subprocess, sys, time
from pathlib import Path
from setproctitle import setproctitle
setproctitle("mutmut: stand-in")
folder, mode = Path(sys.argv[1]), sys.argv[2]

def alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False

def session(name):
    (folder / name).mkdir()
    started = subprocess.Popen([sys.executable, str(folder / "session.py"), str(folder / name)])
    while not (folder / name / "pids").exists():
        time.sleep(0.05)
    return started, [int(p) for p in (folder / name / "pids").read_text().split()]

live, live_servers = session("live")
if mode == "hang":
    time.sleep(3600)
dead, dead_servers = session("dead")
dead.send_signal(signal.SIGKILL)
dead.wait()
deadline = time.monotonic() + 60
while any(alive(p) for p in dead_servers):
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.1)
sys.exit(0 if all(alive(p) for p in live_servers) else 2)
"""

# scripts/mutation's `run`, with the stand-in for mutmut.
DRIVER = """
import os, subprocess, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import mutation
folder, mode = sys.argv[2], sys.argv[3]

def mutmut(*args, **env):
    argv = [sys.executable, os.path.join(folder, "mutmut.py"), folder, mode]
    return subprocess.run(argv, env=dict(os.environ, **env), cwd=mutation.STAGE, check=False).returncode

mutation.mutmut = mutmut
mutation.STAGE = Path(folder) / "stage"  # where mutmut works
mutation.STAGE.mkdir()
try:
    sys.exit(mutation.run([], 1))
except KeyboardInterrupt:
    sys.exit(130)
"""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def driver(folder: Path, mode: str) -> subprocess.Popen[bytes]:
    for name, text in (("session.py", SESSION), ("mutmut.py", MUTMUT), ("driver.py", DRIVER)):
        (folder / name).write_text(text)
    argv = [sys.executable, str(folder / "driver.py"), str(SCRIPTS), str(folder), mode]
    return subprocess.Popen(argv, cwd=folder)


def servers_of(folder: Path) -> list[int]:
    wait_for((folder / "pids").exists, "the session's servers", timeout=120)
    return [int(p) for p in (folder / "pids").read_text().split()]


def kill_left(folder: Path) -> None:
    """What a failing run left: this test leaves nothing behind either way."""
    pids = [
        int(p) for f in folder.glob("*/*") if f.name in ("pids", "runners") for p in f.read_text().split()
    ]
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.servers
@pytest.mark.slow
def test_the_servers_of_a_session_killed_on_its_time_limit_are_stopped_during_the_run(
    tmp_path: Path,
) -> None:
    run = driver(tmp_path, "timeout")
    try:
        # 0: the stand-in saw the killed session's InfluxDB and Mosquitto go while the run
        # still went, and the live session's still running then.
        assert run.wait(timeout=300) == 0
        pids = servers_of(tmp_path / "live") + servers_of(tmp_path / "dead")
        assert [pid for pid in pids if alive(pid)] == []  # the live one's too, at the end
    finally:
        kill_left(tmp_path)


@pytest.mark.servers
@pytest.mark.slow
def test_a_run_stopped_with_sigterm_stops_what_its_tests_started(tmp_path: Path) -> None:
    run = driver(tmp_path, "hang")
    pids = servers_of(tmp_path / "live")
    try:
        assert all(alive(pid) for pid in pids)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=300) == 130
        # The servers are stopped before the script exits, not some time after; and the
        # test session mutmut was running, and mutmut.
        assert [pid for pid in pids if alive(pid)] == []
        runners = [int(p) for p in (tmp_path / "live" / "runners").read_text().split()]
        assert [pid for pid in runners if alive(pid)] == []
    finally:
        kill_left(tmp_path)


# A test session with a full-disk test's tmpfs mounted (test_full_disk.py's SmallDisk, as its
# fixture mounts it); it waits to be killed.
DISK_SESSION = """
import sys, time
from pathlib import Path
sys.path[:0] = [sys.argv[2], sys.argv[2] + "/edge"]
from test_full_disk import SmallDisk
SmallDisk(Path(sys.argv[1]) / "disk")
(Path(sys.argv[1]) / "mounted").touch()
time.sleep(3600)
"""


def mounted(folder: Path) -> bool:
    return any(
        line.split()[4] == str(folder) for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )


@pytest.mark.servers
@pytest.mark.slow
def test_the_full_disk_of_a_session_killed_on_its_time_limit_is_unmounted_and_a_live_one_s_kept(
    tmp_path: Path,
) -> None:
    spec = importlib.util.spec_from_file_location("mutation_leftovers", SCRIPTS / "mutation_leftovers.py")
    assert spec is not None
    assert spec.loader is not None
    leftovers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(leftovers)
    (tmp_path / "session.py").write_text(DISK_SESSION)
    sessions = {}
    for name in ("dead", "live"):
        (tmp_path / name).mkdir()
        argv = [
            sys.executable,
            str(tmp_path / "session.py"),
            str(tmp_path / name),
            str(Path(__file__).parents[1]),
        ]
        sessions[name] = subprocess.Popen(argv)
    try:
        for name in sessions:
            wait_for((tmp_path / name / "mounted").exists, f"the {name} session's disk", timeout=120)
        sessions["dead"].kill()  # as mutmut kills a session on its time limit
        sessions["dead"].wait()
        assert mounted(tmp_path / "dead" / "disk")  # its fixture's unmount never ran
        leftovers.unmount_stale()
        assert not mounted(tmp_path / "dead" / "disk")
        assert mounted(tmp_path / "live" / "disk")  # its session still runs: still its disk
    finally:
        for name, session in sessions.items():
            session.kill()
            session.wait()
            if mounted(tmp_path / name / "disk"):
                subprocess.run(["umount", "--lazy", str(tmp_path / name / "disk")], check=True, timeout=30)
