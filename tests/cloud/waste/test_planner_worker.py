"""The renovation planner's worker process goes with the service, even when it is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from support import wait_until

pytestmark = pytest.mark.servers  # every test here starts a server or a process

# A service in miniature: a forked pool worker set up as the planner's is, then a wait forever.
SERVICE = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from linli.cloud.waste.planner import die_with_parent
pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                           initializer=die_with_parent, initargs=(os.getpid(),))
print(pool.submit(os.getpid).result(), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has gone: only its entry waits
    except FileNotFoundError:
        return False


def test_a_killed_service_leaves_no_planner_worker_behind() -> None:
    service = subprocess.Popen([sys.executable, "-c", SERVICE], stdout=subprocess.PIPE, text=True)
    assert service.stdout is not None
    worker = int(service.stdout.readline())
    assert worker != service.pid
    assert alive(worker)
    os.kill(service.pid, signal.SIGKILL)
    service.wait(10)
    # Without the death signal the worker waits on its queue for good (one left per kill).
    asyncio.run(wait_until(lambda: not alive(worker), 10, "the planner's worker to go with its service"))
