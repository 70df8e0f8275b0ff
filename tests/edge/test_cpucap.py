"""The benchmarks' CPU cap: a control group's quota written as each cgroup version reads it.

The kernel's own files are not needed to check what is written: a directory laid out as each
version's hierarchy is (the kernel makes a new group's files; here the test does).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from cpucap import PERIOD_US, CapError, CpuCap


def test_a_cap_on_cgroup_v2_writes_its_quota_to_cpu_max(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.procs").write_text("")
    cap = CpuCap(0.25, "bench", root=tmp_path)
    assert (tmp_path / "bench" / "cpu.max").read_text() == f"{PERIOD_US // 4} {PERIOD_US}"
    cap.add(4242)
    assert cap.pids() == [4242]


def test_a_cap_on_cgroup_v1_writes_its_period_and_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    group = CpuCap(1.5, "bench", root=tmp_path).path
    assert group == tmp_path / "cpu" / "bench"
    assert (group / "cpu.cfs_period_us").read_text() == str(PERIOD_US)
    assert (group / "cpu.cfs_quota_us").read_text() == str(PERIOD_US * 3 // 2)


def test_no_cpu_controller_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    with pytest.raises(CapError, match="no cpu controller"):
        CpuCap(0.25, "bench", root=tmp_path)


@pytest.mark.parametrize("fraction", [0.0, -1.0, 1000.0])
def test_a_cap_outside_the_cores_is_refused(tmp_path: Path, fraction: float) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu\n")
    with pytest.raises(ValueError, match="share of the cores"):
        CpuCap(fraction, "bench", root=tmp_path)
