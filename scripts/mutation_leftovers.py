"""What a mutation run leaves running, stopped: the servers and processes its tests started.

mutmut stops a mutant's pytest session on its time limit (SIGXCPU, then SIGKILL), so the
session's fixtures never stop the servers it started: InfluxDB, Mosquitto, PostgreSQL, each in
a session of its own (so that a terminal's Ctrl-C does not reach them) and so not stopped with
it. Every process of a run carries the run's token in its environment (`LINLI_MUTATION_RUN`),
inherited from mutmut. While the run goes, a process with the token that no longer descends
from the script (it was handed to init when its test session died) is stopped; when the run
ends, however it ends (SIGTERM and SIGHUP are made to end it as Ctrl-C does), every process
with the token, below the script or working in the stage is. So is a test disk (the tmpfs of
`tests/edge/test_full_disk.py`) whose test session is gone: its fixture's unmount never ran.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

RUN_VAR = "LINLI_MUTATION_RUN"
GRACE_S = 10.0  # a server's own shutdown (PostgreSQL's fast one, InfluxDB's) before SIGKILL
SWEEP_S = 2.0  # how often orphans are looked for during a run
# A test disk's mount source: the pid and start time of the test session that mounted it
# (`owner()` in tests/edge/test_full_disk.py).
DISK = re.compile(r"linli-test-(\d+)-(\d+)")


def _stat(pid: int) -> tuple[int, int] | None:
    """A live process's parent and start time (to tell it from a later one of the same pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command, which may hold spaces
    if fields[0] == "Z":
        return None  # exited, not yet reaped
    return int(fields[1]), int(fields[19])


def carriers(token: str) -> set[int]:
    """The live processes whose environment carries `token`."""
    mark = f"{RUN_VAR}={token}".encode()
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if mark in (proc / "environ").read_bytes().split(b"\0") and _stat(int(proc.name)):
                found.add(int(proc.name))
    return found


def _ours(pids: set[int]) -> set[int]:
    """Those of `pids` that descend from this process, by their parents. Not by the parents'
    environment: mutmut's workers set their process title, which overwrites it."""
    parents = {int(p.name): stat[0] for p in Path("/proc").glob("[0-9]*") if (stat := _stat(int(p.name)))}
    ours = set()
    for pid in pids:
        up, seen = pid, set()
        while up in parents and up not in seen and up != os.getpid():
            seen.add(up)
            up = parents[up]
        if up == os.getpid():
            ours.add(pid)
    return ours


def orphans(token: str) -> list[int]:
    """Processes of the run no longer below this one: their test session died, and they were
    handed to init (or a subreaper above)."""
    found = carriers(token)
    return sorted(found - _ours(found))


def left(token: str, stage: Path) -> list[int]:
    """Every process of the run still there: by its token, as this process's descendant, or
    working in `stage` (a mutmut worker, its environment overwritten, whose mutmut is gone)."""
    pids = {int(p.name) for p in Path("/proc").glob("[0-9]*") if _stat(int(p.name))}
    working = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(stage):
                working.add(pid)
    return sorted((carriers(token) | _ours(pids) | working) - {os.getpid()})


def stop(pids: list[int], grace_s: float = GRACE_S) -> None:
    """SIGINT (PostgreSQL's fast shutdown, Ctrl-C to the others) and SIGCONT (a server a fault
    test paused); SIGKILL to what still runs after `grace_s`."""
    started = {pid: stat[1] for pid in pids if (stat := _stat(pid)) is not None}
    for pid in started:
        for sig in (signal.SIGINT, signal.SIGCONT):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
    deadline = time.monotonic() + grace_s
    while started and time.monotonic() < deadline:
        started = {pid: t for pid, t in started.items() if (stat := _stat(pid)) is not None and stat[1] == t}
        time.sleep(0.1)
    for pid, t in started.items():
        if (stat := _stat(pid)) is not None and stat[1] == t:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def stale_disks() -> list[str]:
    """The mount points of the test disks whose test session is gone (or is another process
    now, under the same pid)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount, _, fs = line.partition(" - ")
        kind, source = fs.split()[:2]
        owner = DISK.fullmatch(source)
        if kind == "tmpfs" and owner is not None:
            stat = _stat(int(owner[1]))
            if stat is None or stat[1] != int(owner[2]):
                # mountinfo escapes a space, tab, newline and backslash as \ooo (octal)
                points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), mount.split()[4]))
    return points


def unmount_stale() -> None:
    """Unmount the test disks whose session is gone; lazily: whatever still holds a file on one
    (a server the sweep stops next) does not keep the mount."""
    for point in stale_disks():
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False, timeout=30)


def _ended(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def stopped_after(token: str, stage: Path) -> Iterator[None]:
    """Orphans of the run stopped while it goes, and everything of it once it ends (mutmut
    works in `stage`)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _ended)
    done = threading.Event()

    def sweep() -> None:
        while not done.wait(SWEEP_S):
            stop(orphans(token))
            unmount_stale()

    sweeper = threading.Thread(target=sweep, name="mutation-leftovers", daemon=True)
    sweeper.start()
    try:
        yield
    finally:
        done.set()
        sweeper.join()
        # Stopping a test session orphans its servers: again until nothing of the run is left.
        for _ in range(5):
            still = left(token, stage)
            if not still:
                break
            stop(still)
        unmount_stale()
