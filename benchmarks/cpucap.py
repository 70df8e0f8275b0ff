"""A CPU cap for a benchmark's process: a smaller edge box on this machine's cores.

Overload means more than the agent can store. On a quiet machine the agent stores more than
the publishers can offer on the same two cores, so an overload cannot be offered to it whole.
Capped to a share of a core (a control group's CFS quota, as a container's `--cpus` is), the
agent holds less, and twice what it holds is within the publishers' reach. Its held rate is
then measured under the same cap in the same run, so "twice the held rate" stays what it says.

Needs root and the cpu controller: cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 20_000  # short periods: the quota is spread over the second, not spent in one burst


class CapError(RuntimeError):
    """No cgroup with the cpu controller can be made here (not root, or none mounted)."""


def _where(root: Path) -> tuple[Path, bool]:
    """The cgroup directory to make caps under, and whether it is cgroup v2."""
    controllers = root / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return root, True
    if (root / "cpu" / "cpu.cfs_quota_us").exists():
        return root / "cpu", False
    raise CapError(f"no cpu controller under {root}: mount cgroup v2 with cpu, or v1's cpu hierarchy")


class CpuCap:
    """One control group holding its processes to `fraction` of one core together.

    Use as a context manager; the group is removed when its processes are gone.
    """

    def __init__(self, fraction: float, name: str, root: Path = ROOT) -> None:
        cores = os.cpu_count() or 1
        if not 0 < fraction <= cores:
            raise ValueError(f"a CPU cap is a share of the cores: 0 < fraction <= {cores}, not {fraction}")
        base, v2 = _where(root)
        self.path = base / name
        self.fraction = fraction
        quota = max(1000, round(fraction * PERIOD_US))
        try:
            self.path.mkdir()
            if v2:
                (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        except PermissionError as exc:
            raise CapError(f"cannot make {self.path}: a CPU cap needs root ({exc})") from exc

    def add(self, pid: int) -> None:
        """Put a process, with every thread it has and will have, under the cap."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        """The processes under the cap now."""
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def close(self) -> None:
        """Remove the group; a process still in it is moved back to the root's group first."""
        if not self.path.exists():
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                (self.path.parent / "cgroup.procs").write_text(str(pid))
        self.path.rmdir()

    def __enter__(self) -> CpuCap:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
